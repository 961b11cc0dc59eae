package api

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// The fuzz targets decode arbitrary bytes as a request, exactly as gRPC
// would, and hold validation to the exact answer etcd gives for it (nil or
// one particular error), as the validation model computes it
// (validate_model_test.go), and to never panicking. Seeds are the
// validation table's requests (added below) and the files under
// testdata/fuzz.

// checkValidationResult fails unless validation answered req exactly as
// the model does.
func checkValidationResult(t *testing.T, req proto.Message, got, want error) {
	t.Helper()
	if !sameError(got, want) {
		t.Fatalf("validation of %v returned %v; etcd answers %v", req, got, want)
	}
}

func addSeeds[T proto.Message](f *testing.F) {
	for _, tc := range validationCases {
		if r, ok := tc.req.(T); ok {
			b, err := proto.Marshal(r)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

func FuzzRangeRequest(f *testing.F) {
	addSeeds[*pb.RangeRequest](f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.RangeRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		checkValidationResult(t, r, checkRange(r), modelRange(r))
		checkValidationResult(t, r, checkRangeStream(r), modelRangeStream(r))
	})
}

func FuzzPutRequest(f *testing.F) {
	addSeeds[*pb.PutRequest](f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.PutRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		checkValidationResult(t, r, checkPut(r), modelPut(r))
	})
}

func FuzzDeleteRangeRequest(f *testing.F) {
	addSeeds[*pb.DeleteRangeRequest](f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.DeleteRangeRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		checkValidationResult(t, r, checkDelete(r), modelDelete(r))
	})
}

func FuzzTxnRequest(f *testing.F) {
	addSeeds[*pb.TxnRequest](f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.TxnRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		// A small limit too, so that nesting exhausts it.
		for _, limit := range []int{DefaultMaxTxnOps, 3} {
			err := checkTxn(r, limit)
			checkValidationResult(t, r, err, modelTxn(r, limit))
			if again := checkTxn(r, limit); again != err {
				t.Fatalf("validation is not deterministic: %v, then %v", err, again)
			}
		}
	})
}

// TestValidationNilMessages checks what the decoder never produces but a Go
// caller can: nil requests and nil sub-messages are validated as the empty
// messages they stand for, without a panic.
func TestValidationNilMessages(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"nil range", checkRange(nil), rpctypes.ErrGRPCEmptyKey},
		{"nil put", checkPut(nil), rpctypes.ErrGRPCEmptyKey},
		{"nil delete", checkDelete(nil), rpctypes.ErrGRPCEmptyKey},
		{"nil txn", checkTxn(nil, 128), nil},
		{"nil op", checkTxn(&pb.TxnRequest{Success: []*pb.RequestOp{nil}}, 128), rpctypes.ErrGRPCKeyNotFound},
		{"nil compare", checkTxn(&pb.TxnRequest{Compare: []*pb.Compare{nil}}, 128), rpctypes.ErrGRPCEmptyKey},
		{"nil put op", checkTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{}}}}, 128), rpctypes.ErrGRPCEmptyKey},
		{"nil nested txn", checkTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{}}}}, 128), nil},
		{"nil delete op", checkTxnWritesErr([]*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{}}}), nil},
	}
	for _, tc := range cases {
		if tc.err != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
}

func checkTxnWritesErr(ops []*pb.RequestOp) error {
	_, err := checkTxnWrites(ops)
	return err
}
