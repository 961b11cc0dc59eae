# The few targets people reach for. Plain go commands work just as well.
.PHONY: build test test-long lint bench image

build:
	CGO_ENABLED=0 go build -o bin/cairn ./cmd/cairn

test:
	go test ./...

test-long:
	bash .ci/run

lint:
	gofmt -l $$(git ls-files '*.go')
	go vet ./...

bench:
	cd bench/compare && go run . 

image:
	docker build -t cairn:dev .
