package embed

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdembed "go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/oracle"
)

// jwtKeys are the key files of one signing method: priv is the private
// key (PKCS #8) or the HMAC secret, pub the public key (PKIX; "" for HMAC).
type jwtKeys struct{ priv, pub string }

// opts returns the --auth-token string for method with these keys; with
// verifyOnly the private key is left out.
func (k jwtKeys) opts(method, ttl string, verifyOnly bool) string {
	s := "jwt,sign-method=" + method
	if k.pub != "" {
		s += ",pub-key=" + k.pub
	}
	if !verifyOnly {
		s += ",priv-key=" + k.priv
	}
	if ttl != "" {
		s += ",ttl=" + ttl
	}
	return s
}

var (
	rsaKeyOnce sync.Once
	rsaKey     *rsa.PrivateKey
)

// writeJWTKeys writes a fresh key pair fitting method into dir. The RSA
// key is generated once per test binary: 2048-bit generation is the slow
// part, and RS* and PS* take the same key.
func writeJWTKeys(t *testing.T, dir, method string) jwtKeys {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var priv, pub any
	switch method[:2] {
	case "RS", "PS":
		rsaKeyOnce.Do(func() {
			var err error
			if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
				panic(err)
			}
		})
		priv, pub = rsaKey, &rsaKey.PublicKey
	case "ES":
		curve := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[method]
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case "Ed":
		p, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, p
	case "HS":
		secret := make([]byte, 64)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "secret")
		if err := os.WriteFile(p, secret, 0o600); err != nil {
			t.Fatal(err)
		}
		return jwtKeys{priv: p}
	default:
		t.Fatalf("no keys for %s", method)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return jwtKeys{priv: write("priv.pem", "PRIVATE KEY", privDER), pub: write("pub.pem", "PUBLIC KEY", pubDER)}
}

// jwtSide is a server of a JWT comparison: its gRPC endpoints and its
// HTTP base URL.
type jwtSide struct {
	name      string
	endpoints []string
	url       string
}

// startJWTPair starts etcd and a cairn member with the same --auth-token
// string and auth set up and enabled alike (enableAuth), so that both
// are at the same auth revision.
func startJWTPair(t *testing.T, authToken string) (etcd, cairn jwtSide) {
	t.Helper()
	e := oracle.Start(t, func(cfg *etcdembed.Config) {
		cfg.BcryptCost = 4
		cfg.AuthToken = authToken
	})
	etcd = jwtSide{name: "etcd", endpoints: []string{"http://" + e.Addr}, url: "http://" + e.Addr}
	cfg := authConfig(t)
	cfg.AuthToken = authToken
	m := start(t, cfg)
	cairn = jwtSide{name: "cairn", endpoints: m.ClientURLs(), url: m.ClientURLs()[0]}
	for _, s := range []jwtSide{etcd, cairn} {
		enableAuth(t, s.client(t, "", ""))
	}
	return etcd, cairn
}

// client returns a clientv3 client of s logged in as user ("" for none).
func (s jwtSide) client(t *testing.T, user, password string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: s.endpoints, DialTimeout: 10 * time.Second,
		Username: user, Password: password, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("%s: client as %q: %v", s.name, user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// conn returns a plain gRPC connection to s, without clientv3's retries
// and re-authentication, so that a test sees exactly what s answered.
func (s jwtSide) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(s.endpoints[0], "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// getWith reads k1 from s over conn with token in the metadata and
// returns the error's gRPC code and message ("" for success).
func (s jwtSide) getWith(t *testing.T, conn *grpc.ClientConn, token string) string {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(ctxT(t), rpctypes.TokenFieldNameGRPC, token)
	_, err := pb.NewKVClient(conn).Range(ctx, &pb.RangeRequest{Key: []byte("k1")})
	if err != nil {
		st := status.Convert(err)
		return st.Code().String() + ": " + st.Message()
	}
	return ""
}

// post sends body to path on s's gateway with token in the Authorization
// header and returns the status and the body.
func (s jwtSide) post(t *testing.T, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: POST %s: %v", s.name, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// gatewayLogin authenticates alice over s's gateway and returns the token.
func (s jwtSide) gatewayLogin(t *testing.T) string {
	t.Helper()
	var login struct {
		Token string `json:"token"`
	}
	postJSON(t, http.DefaultClient, s.url+"/v3/auth/authenticate", `{"name":"alice","password":"pw"}`, http.StatusOK, &login)
	return login.Token
}

// jwtParts decodes a token's header and claims; it fails the test if
// token is not a JWT.
func jwtParts(t *testing.T, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", token)
	}
	dec := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("token %q: %v", token, err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("token %q: %v", token, err)
		}
		return m
	}
	return dec(parts[0]), dec(parts[1])
}

// tamper changes one character in the middle of the token's signature.
func tamper(token string) string {
	i := strings.LastIndexByte(token, '.') + (len(token)-strings.LastIndexByte(token, '.'))/2
	b := []byte(token)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// resign returns token with its claims replaced by claims (a changed
// username), keeping the original signature: a forgery.
func resign(t *testing.T, token string, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
}

// jwtMethods are the sign methods etcd accepts.
var jwtMethods = []string{
	"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
}

// TestAuthJWTSignMethodsAgainstEtcd: for every sign method etcd accepts,
// etcd and cairn with the same keys issue tokens of the same shape (header,
// claims username, revision and exp), each accepts the other's token over
// gRPC and the gateway, and both refuse a tampered or forged token with
// the same error.
func TestAuthJWTSignMethodsAgainstEtcd(t *testing.T) {
	for _, method := range jwtMethods {
		t.Run(method, func(t *testing.T) {
			keys := writeJWTKeys(t, t.TempDir(), method)
			etcd, cairn := startJWTPair(t, keys.opts(method, "10m", false))
			sides := []jwtSide{etcd, cairn}
			tokens := map[string]string{}
			for _, s := range sides {
				alice := s.client(t, "alice", "pw")
				ctx := ctxT(t)
				if _, err := alice.Put(ctx, "k1", "v1"); err != nil {
					t.Fatalf("%s: put as alice: %v", s.name, err)
				}
				r, err := alice.Authenticate(ctx, "alice", "pw")
				if err != nil {
					t.Fatalf("%s: authenticate: %v", s.name, err)
				}
				tokens[s.name] = r.Token
				gw := s.gatewayLogin(t)
				status, body := s.post(t, "/v3/kv/range", gw, `{"key":"`+b64("k1")+`"}`)
				if status != http.StatusOK || !strings.Contains(body, b64("v1")) {
					t.Fatalf("%s: range over the gateway with its token: %d %s", s.name, status, body)
				}
			}

			start := time.Now()
			eh, ec := jwtParts(t, tokens["etcd"])
			ch, cc := jwtParts(t, tokens["cairn"])
			if !reflect.DeepEqual(eh, ch) || eh["alg"] != method {
				t.Errorf("JWT header: etcd %v, cairn %v", eh, ch)
			}
			keysOf := func(m map[string]any) []string {
				ks := make([]string, 0, len(m))
				for k := range m {
					ks = append(ks, k)
				}
				slices.Sort(ks)
				return ks
			}
			if !slices.Equal(keysOf(ec), keysOf(cc)) || !slices.Equal(keysOf(cc), []string{"exp", "revision", "username"}) {
				t.Errorf("JWT claims: etcd %v, cairn %v", ec, cc)
			}
			if ec["username"] != cc["username"] || ec["revision"] != cc["revision"] {
				t.Errorf("JWT claims: etcd %v, cairn %v", ec, cc)
			}
			for name, c := range map[string]map[string]any{"etcd": ec, "cairn": cc} {
				exp, _ := c["exp"].(float64)
				if left := time.Unix(int64(exp), 0).Sub(start); left < 9*time.Minute || left > 10*time.Minute {
					t.Errorf("%s: JWT exp %v is %v from now, want about the ttl 10m", name, c["exp"], left)
				}
			}

			// Each side accepts the other's token, and refuses a tampered or
			// forged one with the same error.
			_, rootClaims := jwtParts(t, tokens["cairn"])
			rootClaims["username"] = "root"
			forged := map[string]string{
				"tampered": tamper(tokens["cairn"]),
				"forged":   resign(t, tokens["cairn"], rootClaims),
			}
			answers := map[string][]string{}
			for _, s := range sides {
				raw := s.conn(t)
				for _, other := range sides {
					if got := s.getWith(t, raw, tokens[other.name]); got != "" {
						t.Errorf("%s refuses %s's token: %s", s.name, other.name, got)
					}
					status, body := s.post(t, "/v3/kv/range", tokens[other.name], `{"key":"`+b64("k1")+`"}`)
					if status != http.StatusOK {
						t.Errorf("%s's gateway refuses %s's token: %d %s", s.name, other.name, status, body)
					}
				}
				for _, what := range []string{"tampered", "forged"} {
					got := s.getWith(t, raw, forged[what])
					status, body := s.post(t, "/v3/kv/range", forged[what], `{"key":"`+b64("k1")+`"}`)
					answers[s.name] = append(answers[s.name], what+": "+got, what+" over the gateway: "+http.StatusText(status)+" "+body)
				}
			}
			if !slices.Equal(answers["etcd"], answers["cairn"]) {
				t.Errorf("bad tokens:\netcd:  %q\ncairn: %q", answers["etcd"], answers["cairn"])
			}
			if !strings.Contains(answers["cairn"][0], rpctypes.ErrInvalidAuthToken.Error()) {
				t.Errorf("a tampered token: %q, want %q", answers["cairn"][0], rpctypes.ErrInvalidAuthToken)
			}
		})
	}
}

// TestAuthJWTExpiryAgainstEtcd: a JWT with ttl=1s stops working after its
// exp, with the same error from etcd and cairn over gRPC and the gateway,
// and a clientv3 client whose token expired logs in again by itself.
func TestAuthJWTExpiryAgainstEtcd(t *testing.T) {
	keys := writeJWTKeys(t, t.TempDir(), "ES256")
	etcd, cairn := startJWTPair(t, keys.opts("ES256", "1s", false))
	answers := map[string][]string{}
	for _, s := range []jwtSide{etcd, cairn} {
		alice := s.client(t, "alice", "pw")
		ctx := ctxT(t)
		if _, err := alice.Put(ctx, "k1", "v1"); err != nil {
			t.Fatalf("%s: put as alice: %v", s.name, err)
		}
		r, err := alice.Authenticate(ctx, "alice", "pw")
		if err != nil {
			t.Fatal(err)
		}
		raw := s.conn(t)
		// The token works until its exp (a whole second: exp is in
		// seconds, so it may already be near), then never again.
		kit.WaitFor(t, s.name+": the JWT to expire", func() bool { return s.getWith(t, raw, r.Token) != "" })
		answers[s.name] = append(answers[s.name], s.getWith(t, raw, r.Token))
		status, body := s.post(t, "/v3/kv/range", r.Token, `{"key":"`+b64("k1")+`"}`)
		answers[s.name] = append(answers[s.name], http.StatusText(status)+" "+body)
		// alice's client holds a token at least as old: it must get
		// "invalid auth token", log in again and retry on its own.
		got, err := alice.Get(ctx, "k1")
		if err != nil || len(got.Kvs) != 1 {
			t.Fatalf("%s: alice's client after its token expired: %v %v", s.name, got, err)
		}
		if _, err := alice.Put(ctx, "k2", "v2"); err != nil {
			t.Fatalf("%s: alice's client puts after its token expired: %v", s.name, err)
		}
	}
	if !slices.Equal(answers["etcd"], answers["cairn"]) {
		t.Errorf("an expired JWT:\netcd:  %q\ncairn: %q", answers["etcd"], answers["cairn"])
	}
	if !strings.Contains(answers["cairn"][0], rpctypes.ErrInvalidAuthToken.Error()) {
		t.Errorf("an expired JWT: %q, want %q", answers["cairn"][0], rpctypes.ErrInvalidAuthToken)
	}
}

// TestAuthJWTVerifyOnlyMember: in a cluster whose second member has only
// the public key, that member verifies the tokens the first member signs
// but cannot issue one; it refuses Authenticate with etcd's error (a
// verify-only etcd is the reference).
func TestAuthJWTVerifyOnlyMember(t *testing.T) {
	keys := writeJWTKeys(t, t.TempDir(), "RS256")
	ms := startCluster(t, 2, "http", func(cfg *Config) {
		cfg.BcryptCost = 4
		cfg.AuthToken = keys.opts("RS256", "", cfg.Name == "m2")
	})
	enableAuth(t, client(t, ms[0]))
	signer := jwtSide{name: "m1", endpoints: ms[0].ClientURLs(), url: ms[0].ClientURLs()[0]}
	verifier := jwtSide{name: "m2", endpoints: ms[1].ClientURLs(), url: ms[1].ClientURLs()[0]}

	ctx := ctxT(t)
	r, err := signer.client(t, "", "").Authenticate(ctx, "alice", "pw")
	if err != nil {
		t.Fatalf("authenticate on the signing member: %v", err)
	}
	raw := verifier.conn(t)
	putCtx := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, r.Token)
	if _, err := pb.NewKVClient(raw).Put(putCtx, &pb.PutRequest{Key: []byte("k1"), Value: []byte("v1")}); err != nil {
		t.Fatalf("the verify-only member refuses the signer's token: %v", err)
	}
	if got := verifier.getWith(t, raw, r.Token); got != "" {
		t.Fatalf("the verify-only member refuses the signer's token for a read: %s", got)
	}
	if got := verifier.getWith(t, raw, tamper(r.Token)); !strings.Contains(got, rpctypes.ErrInvalidAuthToken.Error()) {
		t.Fatalf("the verify-only member and a tampered token: %q, want %q", got, rpctypes.ErrInvalidAuthToken)
	}
	if status, body := verifier.post(t, "/v3/kv/range", r.Token, `{"key":"`+b64("k1")+`"}`); status != http.StatusOK || !strings.Contains(body, b64("v1")) {
		t.Fatalf("the verify-only member's gateway with the signer's token: %d %s", status, body)
	}

	_, cairnErr := verifier.client(t, "", "").Authenticate(ctx, "alice", "pw")
	cairnStatus, cairnBody := verifier.post(t, "/v3/auth/authenticate", "", `{"name":"alice","password":"pw"}`)

	e := oracle.Start(t, func(cfg *etcdembed.Config) {
		cfg.BcryptCost = 4
		cfg.AuthToken = keys.opts("RS256", "", true)
	})
	etcd := jwtSide{name: "etcd", endpoints: []string{"http://" + e.Addr}, url: "http://" + e.Addr}
	enableAuth(t, etcd.client(t, "", ""))
	_, etcdErr := etcd.client(t, "", "").Authenticate(ctx, "alice", "pw")
	etcdStatus, etcdBody := etcd.post(t, "/v3/auth/authenticate", "", `{"name":"alice","password":"pw"}`)
	if etcdErr == nil || cairnErr == nil || etcdErr.Error() != cairnErr.Error() {
		t.Errorf("Authenticate on a verify-only member: cairn %v, etcd %v", cairnErr, etcdErr)
	}
	if cairnStatus != etcdStatus || cairnBody != etcdBody {
		t.Errorf("Authenticate over the gateway of a verify-only member: cairn %d %s, etcd %d %s", cairnStatus, cairnBody, etcdStatus, etcdBody)
	}
}
