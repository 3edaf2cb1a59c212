# directord: build, test tiers, benchmarks, demo.
# `make test` is what CI runs (.ci/run): it installs what it needs and runs
# every tier; with CI=true no tier may skip.

GO        ?= go
BIN       := bin
FUZZTIME  ?=
# Tiers are picked by test name: TestNetns* need root and network
# namespaces on the host kernel, TestVM* boot the qemu guest with IPVS;
# everything else is the unprivileged unit tier.
PRIV      := ^Test(Netns|VM)

.PHONY: all build deps vet test test-unit test-netns test-vm fuzz bench demo drill soak clean

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

# Every parser's fuzz target, briefly: a count of executions (about 20 s
# each here), not a duration, because go1.26's coordinator can report a
# spurious "context deadline exceeded" when a -fuzztime duration ends
# (golang/go#75804); minimizing a new input is bounded the same way, or it
# can take a minute per input. Run longer with FUZZTIME=10m.
fuzzrun = $(GO) test -run '^$$' -fuzz '^$(1)$$' -fuzztime $(or $(FUZZTIME),$(3)x) -fuzzminimizetime 1000x $(2)
fuzz:
	$(call fuzzrun,FuzzParse,./internal/config,300000)
	$(call fuzzrun,FuzzParse,./vrrp,250000)
	$(call fuzzrun,FuzzParseConnections,./ipvs,300000)
	$(call fuzzrun,FuzzDecodeReplies,./ipvs,400000)
	$(call fuzzrun,FuzzDNSReply,./healthcheck,300000)
	$(call fuzzrun,FuzzDecode,./sync,600000)
	$(call fuzzrun,FuzzImport,./internal/kaimport,60000)

# Speed goals as ratios against the reference tool measured in the same run
# (TESTING.md). VRRP: allocations per advert sent and received (goal 0);
# client-visible takeover outage, directord vs keepalived; adverts a backup
# at 10 ms sends during a minute of full CPU saturation, directord vs
# keepalived (root and network namespaces; skips without them); adverts a
# backup at 10 ms sends while both directors' IPVS tables are re-synced
# (VM; keepalived has no such re-sync). IPVS:
# installing 1,000 services x 10 real servers, directord vs ipvsadm -R in
# one VM run, then one change on top (qemu guest; skips without it). Health
# checks: 10,000 tcp checks on the host (CPU, RSS), and 1,000 checks,
# directord vs keepalived's checker, in the VM. End to end: every failover
# drill under load, directord vs keepalived (VM). The run is kept in
# $(BIN)/bench and written up as docs/benchmarks.md, with the machine.
bench:
	rm -rf $(BIN)/bench
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkAdvertSendReceive$$' -benchmem ./vrrp
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkNetnsTakeover$$' -benchtime 1x -timeout 20m ./vrrp
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkNetnsSaturated$$' -benchtime 1x -timeout 20m ./vrrp
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkVMInstall$$' -benchtime 1x -timeout 20m ./ipvs
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkNetnsChecks$$' -benchtime 1x -timeout 20m ./healthcheck
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkVMChecks$$' -benchtime 1x -timeout 20m ./internal/daemon
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkVMResync$$' -benchtime 1x -timeout 15m ./e2e
	@scripts/bench-run.sh $(BIN)/bench $(GO) test -run '^$$' -bench '^BenchmarkVMDrill$$' -benchtime 1x -timeout 40m ./e2e
	scripts/bench-report.sh $(BIN)/bench >docs/benchmarks.md

# The demo lab (e2e): a director pair, DR and NAT services, real servers
# and a client; status, the IPVS table and one drill under load. In
# namespaces on the host if its kernel has IPVS, else in the VM.
demo: deps build
	@scripts/demo.sh

# Every failover drill under load, directord and keepalived on the same lab
# in one VM run, printed as one table (e2e, docs/drills.md).
drill: deps
	cd e2e && $(GO) test -count=1 -run '^$$' -bench '^BenchmarkVMDrill$$' -benchtime 1x -timeout 40m

# 200 failovers (SOAK=N), alternating directorctl drill and SIGKILL: no
# split brain, no leaked VIP, the surviving director's goroutines, files and
# memory flat (VM).
soak: deps
	cd e2e && DIRECTORD_E2E_SOAK=$(or $(SOAK),200) $(GO) test -count=1 -run '^$$' -bench '^BenchmarkVMSoak$$' -benchtime 1x -timeout 70m

clean:
	rm -rf $(BIN)
