# The few targets people reach for. Plain go commands work just as well.
.PHONY: build test test-long lint bench image

# The static binary: the image (FROM scratch) holds it and nothing else.
build:
	CGO_ENABLED=0 go build -o bin/cairn ./cmd/cairn

test:
	go test ./...

# Every tier .ci/run has, as CI runs them.
test-long:
	bash .ci/run

# Fails on files gofmt would change, and on anything go vet reports, in
# both modules (the docker tag vets the container tests too).
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')) || exit 1; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	go vet -tags docker ./...
	cd bench/compare && go vet ./...

bench:
	cd bench/compare && go run .

# The image copies bin/cairn, so it builds it first.
image: build
	docker build -t cairn:dev .
