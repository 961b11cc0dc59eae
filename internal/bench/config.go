package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Config holds what every workload shares: where to connect, how much load
// to generate, and the shape of the keys and values.
type Config struct {
	// Endpoints are the servers' client addresses ("127.0.0.1:2379" or a
	// URL); every connection balances over all of them as clientv3 does.
	Endpoints []string
	// Conns is the number of gRPC connections; Clients is the number of
	// concurrent workers, spread over the connections round-robin.
	Conns, Clients int

	// Total is the number of requests to issue (0: no limit, Duration must
	// be set); Duration bounds the run in time (0: no limit, Total must be
	// set). The run ends at whichever comes first.
	Total    int64
	Duration time.Duration
	// Rate caps the requests per second over all clients (0: no cap).
	Rate float64
	// RequestTimeout bounds each request; one that times out is an error.
	RequestTimeout time.Duration
	// DialTimeout bounds establishing each connection.
	DialTimeout time.Duration
	// User, if set, is "name:password" (or just "name", with Password
	// separate): every connection logs in as that user, as etcdctl's
	// --user does, and its requests carry the token. Empty: no login.
	User string
	// Password is the user's password when User holds only the name.
	Password string

	// KeySize is the length of every key in bytes, after KeyPrefix; keys
	// are KeyPrefix followed by a decimal number in [0, KeySpaceSize),
	// zero-padded to KeySize. SequentialKeys walks the key space in order
	// instead of choosing keys at random.
	KeyPrefix      string
	KeySize        int
	KeySpaceSize   int64
	SequentialKeys bool
	// ValSize is the length of every value: random bytes, new for each
	// request, so that a store that compresses cannot shrink them.
	ValSize int

	// Progress receives the progress display (nil: none) in ProgressMode.
	Progress     io.Writer
	ProgressMode ProgressMode
}

// DefaultConfig returns the defaults of `cairn bench`, the same as etcd's
// benchmark tool: one connection, one client, 10,000 requests, 8-byte keys
// and values, a key space of one key.
func DefaultConfig() Config {
	return Config{
		Endpoints:      []string{"127.0.0.1:2379"},
		Conns:          1,
		Clients:        1,
		Total:          10000,
		RequestTimeout: 10 * time.Second,
		DialTimeout:    5 * time.Second,
		KeySize:        8,
		KeySpaceSize:   1,
		ValSize:        8,
	}
}

// ErrNoBound is returned for a run with neither a request count nor a time
// limit: such a run would never end on its own.
var ErrNoBound = errors.New("bench: set a total number of requests or a duration")

func (c *Config) validate() error {
	switch {
	case len(c.Endpoints) == 0:
		return errors.New("bench: no endpoints")
	case c.Conns < 1:
		return fmt.Errorf("bench: conns must be at least 1, got %d", c.Conns)
	case c.Clients < 1:
		return fmt.Errorf("bench: clients must be at least 1, got %d", c.Clients)
	case c.Total < 0 || c.Duration < 0 || c.Rate < 0:
		return errors.New("bench: total, duration and rate must not be negative")
	case c.Total == 0 && c.Duration == 0:
		return ErrNoBound
	case c.KeySpaceSize < 1:
		return fmt.Errorf("bench: key space size must be at least 1, got %d", c.KeySpaceSize)
	case c.ValSize < 0:
		return fmt.Errorf("bench: value size must not be negative, got %d", c.ValSize)
	}
	if _, _, err := c.credentials(); err != nil {
		return err
	}
	if need := len(strconv.FormatInt(c.KeySpaceSize-1, 10)); c.KeySize < need {
		return fmt.Errorf("bench: a key space of %d keys needs keys of at least %d bytes, got key size %d",
			c.KeySpaceSize, need, c.KeySize)
	}
	return nil
}

// ErrNoUserName is returned for a User that names no user (":pw").
var ErrNoUserName = errors.New("bench: --user needs a user name (name:password)")

// credentials splits User into the name and password clientv3 logs in
// with, as etcdctl splits --user: at the first colon; without one, the
// password is Password.
func (c *Config) credentials() (user, password string, err error) {
	if c.User == "" {
		return "", "", nil
	}
	user, password, ok := strings.Cut(c.User, ":")
	if !ok {
		password = c.Password
	}
	if user == "" {
		return "", "", ErrNoUserName
	}
	return user, password, nil
}

// key returns key number n (taken modulo the key space): KeyPrefix and the
// number as KeySize bytes.
func (c *Config) key(n int64) string {
	n %= c.KeySpaceSize
	if n < 0 {
		n += c.KeySpaceSize
	}
	return fmt.Sprintf("%s%0*d", c.KeyPrefix, c.KeySize, n)
}

// dial opens Conns clients and checks that the first one reaches a server,
// so that a wrong endpoint fails at once instead of as N timeouts.
func (c *Config) dial(ctx context.Context) ([]*clientv3.Client, error) {
	user, password, err := c.credentials()
	if err != nil {
		return nil, err
	}
	clients := make([]*clientv3.Client, 0, c.Conns)
	for range c.Conns {
		// With a user, clientv3.New logs in before it returns (one
		// Authenticate per connection, outside the measured run) and
		// logs in again by itself if the server drops the token.
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   c.Endpoints,
			DialTimeout: c.DialTimeout,
			Username:    user,
			Password:    password,
			Logger:      zap.NewNop(),
			// No Context: the caller closes the clients, after any
			// cleanup (revoking leases) that must outlive a cancelled run.
		})
		if err != nil {
			closeAll(clients)
			return nil, fmt.Errorf("bench: connect to %v: %w", c.Endpoints, err)
		}
		clients = append(clients, cli)
	}
	pctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	// A user may lack permission on the probe's key: the refusal still
	// comes from a server that checked the login.
	_, err = clients[0].Get(pctx, "bench-probe", clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		closeAll(clients)
		return nil, fmt.Errorf("bench: reach %v: %w", c.Endpoints, err)
	}
	return clients, nil
}

func closeAll(clients []*clientv3.Client) {
	for _, cli := range clients {
		cli.Close()
	}
}
