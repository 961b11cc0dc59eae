package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// payload makes one worker's keys and values. Not safe for concurrent use:
// each worker has its own.
type payload struct {
	cfg *Config
	rng *rand.Rand
	val []byte
}

func newPayload(cfg *Config, seed uint64, worker int) *payload {
	return &payload{
		cfg: cfg,
		rng: rand.New(rand.NewPCG(seed, uint64(worker))),
		val: make([]byte, cfg.ValSize),
	}
}

// keyNumber returns the number of the key request seq writes or reads:
// seq itself with sequential keys, otherwise a random one.
func (p *payload) keyNumber(seq int64) int64 {
	if p.cfg.SequentialKeys {
		return seq
	}
	return p.rng.Int64N(p.cfg.KeySpaceSize)
}

// value returns ValSize fresh random bytes.
func (p *payload) value() string {
	var word [8]byte
	for i := 0; i < len(p.val); i += 8 {
		binary.LittleEndian.PutUint64(word[:], p.rng.Uint64())
		copy(p.val[i:], word[:])
	}
	return string(p.val)
}

// Put writes one key per request (see Config for the keys and values).
func Put(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	clients, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	seed := rand.Uint64()
	return closedLoop(ctx, &cfg, "put", clients, func(i int, cli *clientv3.Client) (request, func(), error) {
		p := newPayload(&cfg, seed, i)
		return func(ctx context.Context, seq int64) error {
			_, err := cli.Put(ctx, cfg.key(p.keyNumber(seq)), p.value())
			return err
		}, nil, nil
	})
}

// RangeOptions says what the range workload reads. Every request reads the
// same range.
type RangeOptions struct {
	// Key is the first key; End, if set, the end of the range (exclusive).
	Key, End string
	// Prefix reads every key starting with Key (End must be empty).
	Prefix bool
	// Serializable reads from the local member without a read-index
	// round; the default is a linearizable read.
	Serializable bool
	// Limit caps the keys returned per request (0: no cap).
	Limit int64
	// CountOnly returns only the number of keys.
	CountOnly bool
}

// Range issues the same range request again and again. The report's
// "keys_returned" counter adds up the keys (or the counts, with CountOnly)
// of every successful response.
func Range(ctx context.Context, cfg Config, opts RangeOptions) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if opts.Prefix && opts.End != "" {
		return nil, errors.New("bench: range: an end key and --prefix exclude each other")
	}
	var ops []clientv3.OpOption
	switch {
	case opts.Prefix:
		ops = append(ops, clientv3.WithPrefix())
	case opts.End != "":
		ops = append(ops, clientv3.WithRange(opts.End))
	}
	if opts.Serializable {
		ops = append(ops, clientv3.WithSerializable())
	}
	if opts.Limit > 0 {
		ops = append(ops, clientv3.WithLimit(opts.Limit))
	}
	if opts.CountOnly {
		ops = append(ops, clientv3.WithCountOnly())
	}
	clients, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	var keys atomic.Int64
	r, err := closedLoop(ctx, &cfg, "range", clients, func(_ int, cli *clientv3.Client) (request, func(), error) {
		return func(ctx context.Context, _ int64) error {
			resp, err := cli.Get(ctx, opts.Key, ops...)
			if err != nil {
				return err
			}
			if opts.CountOnly {
				keys.Add(resp.Count)
			} else {
				keys.Add(int64(len(resp.Kvs)))
			}
			return nil
		}, nil, nil
	})
	if err != nil {
		return nil, err
	}
	r.Counters = map[string]int64{"keys_returned": keys.Load()}
	return r, nil
}

// TxnPutOptions shapes the txn-put workload.
type TxnPutOptions struct {
	// OpsPerTxn is the number of puts in each transaction, on consecutive
	// distinct keys (a txn may not put the same key twice).
	OpsPerTxn int
}

// TxnPut issues transactions whose success branch puts OpsPerTxn keys and
// which have no comparisons, so every transaction writes. The report's
// "puts" counter is the number of keys written by successful transactions.
func TxnPut(ctx context.Context, cfg Config, opts TxnPutOptions) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := int64(opts.OpsPerTxn)
	if n < 1 {
		return nil, fmt.Errorf("bench: txn-put: ops per txn must be at least 1, got %d", n)
	}
	if n > cfg.KeySpaceSize {
		return nil, fmt.Errorf("bench: txn-put: %d distinct keys per txn need a key space of at least %d, got %d",
			n, n, cfg.KeySpaceSize)
	}
	clients, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	seed := rand.Uint64()
	r, err := closedLoop(ctx, &cfg, "txn-put", clients, func(i int, cli *clientv3.Client) (request, func(), error) {
		p := newPayload(&cfg, seed, i)
		ops := make([]clientv3.Op, n)
		return func(ctx context.Context, seq int64) error {
			base := p.keyNumber(seq * n)
			for j := range ops {
				ops[j] = clientv3.OpPut(cfg.key(base+int64(j)), p.value())
			}
			_, err := cli.Txn(ctx).Then(ops...).Commit()
			return err
		}, nil, nil
	})
	if err != nil {
		return nil, err
	}
	r.Counters = map[string]int64{"puts": r.Requests * n}
	return r, nil
}
