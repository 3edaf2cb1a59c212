# directord: build, test tiers, benchmarks, demo.
# `make test` is what CI runs (.ci/run): it installs what it needs and runs
# every tier; with CI=true no tier may skip.

GO        ?= go
BIN       := bin
FUZZTIME  ?= 20s
# Tiers are picked by test name: TestNetns* need root and network
# namespaces on the host kernel, TestVM* boot the qemu guest with IPVS;
# everything else is the unprivileged unit tier.
PRIV      := ^Test(Netns|VM)

.PHONY: all build deps vet test test-unit test-netns test-vm fuzz bench demo clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/directord ./cmd/directorctl

deps:
	@scripts/install-deps.sh
	@$(GO) mod download

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

test: deps vet test-unit fuzz test-netns test-vm

test-unit:
	@scripts/test-tier.sh unit -skip '$(PRIV)'

test-netns:
	@scripts/test-tier.sh netns -run '^TestNetns'

test-vm:
	@scripts/test-tier.sh vm -timeout 20m -run '^TestVM'

# Every parser's fuzz target, briefly; run longer with FUZZTIME=10m.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./vrrp
	$(GO) test -run '^$$' -fuzz '^FuzzParseConnections$$' -fuzztime $(FUZZTIME) ./ipvs
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeReplies$$' -fuzztime $(FUZZTIME) ./ipvs
	$(GO) test -run '^$$' -fuzz '^FuzzDNSReply$$' -fuzztime $(FUZZTIME) ./healthcheck

# Speed goals as ratios against the reference tool measured in the same run
# (TESTING.md). VRRP: client-visible takeover outage, directord vs
# keepalived (root and network namespaces; skips without them). IPVS:
# installing 1,000 services x 10 real servers, directord vs ipvsadm -R in
# one VM run, then one change on top (qemu guest; skips without it).
bench:
	$(GO) test -run '^$$' -bench '^BenchmarkNetnsTakeover$$' -benchtime 1x -timeout 20m ./vrrp
	$(GO) test -run '^$$' -bench '^BenchmarkVMInstall$$' -benchtime 1x -timeout 20m ./ipvs

demo: build
	@scripts/demo.sh $(BIN)/directord

clean:
	rm -rf $(BIN)
