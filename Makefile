# meshmart's build. Every tool comes from tools/go.mod through `go tool`, so a machine needs only Go
# (plus git, tar and a C compiler for -race); nothing is installed by hand.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Every module of the workspace, as package patterns: ./pkg/... ./proto/... and so on.
MODULES := $(shell go list -m -f '{{.Dir}}/...')
BUF := go tool buf

# protovalidate's validate.proto, copied from its Go module because the Buf Schema Registry is
# unreachable. Keep the version in step with buf.build/go/protovalidate in proto/go.mod.
PROTOVALIDATE_VERSION := v1.2.2
VALIDATE_PROTO := third_party/protovalidate/buf/validate/validate.proto
THIRD_PARTY_STAMP := third_party/.protovalidate-$(PROTOVALIDATE_VERSION)
# google/api/annotations.proto and http.proto (the HTTP bindings of the REST gateway), copied from
# the googleapis copy grpc-gateway v1 ships in its Go module, for the same reason. Their go_package
# is genproto's annotations package, which the generated code imports.
GOOGLEAPIS_MODULE := github.com/grpc-ecosystem/grpc-gateway@v1.16.0
GOOGLEAPIS_STAMP := third_party/.googleapis-v1.16.0

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: tools
tools: consul ## build every pinned tool (buf, protoc plugins, grpcurl, ghz, helm, consul)
	@for t in buf protoc-gen-go protoc-gen-go-grpc protoc-gen-grpc-gateway protoc-gen-openapiv2 grpcurl ghz helm; do echo "go tool $$t: $$(go tool -n $$t)"; done

# Consul, for the test kit and `make run`: the one on PATH when there is one, else built from the Go
# module proxy. `go install` refuses Consul (its go.mod has replace directives), so the recipe
# copies the module, drops the replace block and builds the copy; the copy lives in a fixed cache
# directory so that Go's build cache makes rebuilds on the same machine quick (the first build
# takes about 4 minutes on 2 cores).
CONSUL_VERSION := v1.21.0
CONSUL_SRC := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/meshmart/consul-$(CONSUL_VERSION)

.PHONY: consul
consul: ## make sure a consul binary is on PATH or in bin/
	@if command -v consul >/dev/null; then echo "consul: $$(command -v consul)"; else $(MAKE) --no-print-directory bin/consul; fi

bin/consul:
	@if [ ! -f $(CONSUL_SRC)/go.mod ]; then \
	  dir=$$(go mod download -json github.com/hashicorp/consul@$(CONSUL_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	  rm -rf $(CONSUL_SRC).tmp && mkdir -p $$(dirname $(CONSUL_SRC)) && cp -r "$$dir" $(CONSUL_SRC).tmp; \
	  chmod -R u+w $(CONSUL_SRC).tmp && sed -i '/^replace (/,/^)/d' $(CONSUL_SRC).tmp/go.mod; \
	  mv $(CONSUL_SRC).tmp $(CONSUL_SRC); fi
	@echo "building consul $(CONSUL_VERSION) from the Go module proxy (minutes the first time)"
	cd $(CONSUL_SRC) && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o $(CURDIR)/bin/consul .

# promtool, Prometheus' rule checker, for the rules' checks and unit tests (tools/observability,
# docs/observability.md): built from the Go module proxy at the Prometheus stand-in's version
# (tools/standins/build.sh) with the module's own go.mod, so that tools/go.mod need not take in
# all of Prometheus. remove_all_sd leaves out the service-discovery plugins (AWS, Azure,
# Kubernetes...), which rule checks never use and which are most of the build. The first build
# takes minutes; the binary is kept in the cache.
PROMETHEUS_MODULE_VERSION := v0.316.0
PROMTOOL := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/meshmart/bin/promtool-$(PROMETHEUS_MODULE_VERSION)/promtool

.PHONY: promtool
promtool: $(PROMTOOL) ## build promtool (Prometheus' rule checker) from the Go module proxy into the cache

$(PROMTOOL):
	@echo "building promtool $(PROMETHEUS_MODULE_VERSION) from the Go module proxy (minutes the first time)"
	GOWORK=off GOFLAGS= CGO_ENABLED=0 GOBIN=$(dir $@) go install -trimpath -ldflags='-s -w' -tags remove_all_sd github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_MODULE_VERSION)

.PHONY: promtool-test
promtool-test: promtool ## check and unit-test the Prometheus rules (deploy/observability/prometheus)
	$(PROMTOOL) check rules deploy/observability/prometheus/alerts.yml
	cd deploy/observability/prometheus && $(PROMTOOL) test rules alerts.test.yml

.PHONY: third_party
third_party: $(THIRD_PARTY_STAMP) $(GOOGLEAPIS_STAMP) ## copy third-party protos from the Go module proxy

$(THIRD_PARTY_STAMP):
	rm -rf third_party/protovalidate third_party/.protovalidate-*
	dir=$$(go mod download -json github.com/bufbuild/protovalidate@$(PROTOVALIDATE_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	  install -D -m 644 "$$dir/proto/protovalidate/buf/validate/validate.proto" $(VALIDATE_PROTO)
	touch $@

$(GOOGLEAPIS_STAMP):
	rm -rf third_party/googleapis third_party/.googleapis-*
	dir=$$(go mod download -json $(GOOGLEAPIS_MODULE) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	  for f in annotations.proto http.proto; do \
	    install -D -m 644 "$$dir/third_party/googleapis/google/api/$$f" third_party/googleapis/google/api/$$f; done
	touch $@

.PHONY: generate
generate: third_party ## regenerate the Go code of every .proto file
	find proto -name '*.pb.go' -delete -o -name '*.pb.gw.go' -delete
	rm -f services/gateway/internal/openapi/meshmart.swagger.json
	$(BUF) generate

.PHONY: check-generated
check-generated: generate ## fail when regenerating changes anything
	@if [ -n "$$(git status --porcelain -- proto services/gateway/internal/openapi)" ]; then \
	  git status --porcelain -- proto services/gateway/internal/openapi; git --no-pager diff --stat -- proto services/gateway/internal/openapi; \
	  echo "generated code is stale: run 'make generate' and commit the result" >&2; exit 1; fi

.PHONY: lint
lint: third_party ## buf format and lint, gofmt and go vet on every module
	$(BUF) format --diff --exit-code proto
	$(BUF) lint
	@unformatted=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "not gofmt-ed: $$unformatted" >&2; exit 1; fi
	go vet $(MODULES)
	@# Each module must also build on its own (GOWORK=off), as the service images do; so must
	@# tools/benchpeers, which is in no workspace (make bench builds it; vetting it here would
	@# compile kratos and go-zero for every lint).
	@for mod in $$(go list -m -f '{{.Dir}}') $(CURDIR)/tools/benchpeers; do \
	  (cd "$$mod" && GOWORK=off go mod tidy -diff >/dev/null) || { echo "$$mod: go.mod/go.sum not tidy on its own: run 'GOWORK=off go mod tidy' in it" >&2; exit 1; }; done

.PHONY: breaking
breaking: third_party ## buf breaking on every commit and the working tree (see docs/development.md, Breaking changes)
	go run ./tools/breakcheck -buf "$$(go tool -n buf)"

.PHONY: build
build: ## build every module
	go build $(MODULES)

.PHONY: test
test: third_party consul helm-check promtool ## run every test of every module, with the race detector
	go test -race -count=1 -timeout 30m $(MODULES)

# The fast layer: the domain, transport and chassis unit tests, on SQLite in temporary
# directories. Left out: service binaries (cmd/), the stores (they also run on PostgreSQL), the
# packages that start Consul or PostgreSQL (pkg/consul, pkg/sqldb, pkg/testkit) and tools/ (the
# fault tests and the benchmarks).
FAST_EXCLUDE := /cmd/|/internal/store$$|/tools/|/pkg/(consul|sqldb|testkit)$$

# The Helm chart (deploy/helm/meshmart), offline: no cluster, no network, no Docker. helm lint
# --strict and helm template with every values file (Helm pinned in tools/go.mod), every rendered
# object decoded strictly into the pinned k8s.io/api types, and the policy test (docs/kubernetes.md).
.PHONY: helm-check
helm-check: ## lint, render, validate and policy-check the Helm chart (offline)
	@echo "go tool helm: $$(go tool -n helm)"
	go test -count=1 ./tools/helmcheck

.PHONY: test-fast
test-fast: ## domain and transport tests only: no binaries, Consul or PostgreSQL (well under a minute)
	go test -race -count=1 -timeout 5m $$(go list $(MODULES) | grep -Ev '$(FAST_EXCLUDE)')

# Both build tools/benchpeers first (kratos and go-zero, GOWORK=off): a link once Go's build cache
# has it, but its first build took 28 minutes on a 2-core machine shared with other builds, hence
# the timeouts.
.PHONY: bench
bench: third_party consul ## the platform under load (3 replicas, SQLite and PostgreSQL) and the chassis vs its peers: one table of ratios and percentiles and issue 18's targets, as in BENCHMARKS.md
	go test -run '^$$' -bench BenchmarkPlatform -benchtime 1x -timeout 60m ./tools/bench/

.PHONY: bench-chassis
bench-chassis: third_party ## the chassis vs bare grpc-go, go-kratos and go-zero (tools/benchpeers), with issue 18's targets: make bench's chassis rows alone
	go test -run '^$$' -bench BenchmarkChassis -benchtime 1x -timeout 45m ./tools/bench/

.PHONY: bench-user
bench-user: ## user service: GetUser and CreateUser through the chassis vs a bare grpc-go server
	go test -run '^$$' -bench BenchmarkUserService -benchtime 1x ./services/user/internal/grpcapi/

.PHONY: bench-payment
bench-payment: ## payment service: CreatePayment through the chassis, new vs repeated keys, vs bare grpc-go
	go test -run '^$$' -bench BenchmarkCharge -benchtime 1x ./services/payment/internal/grpcapi/

.PHONY: bench-order
bench-order: consul ## order service: CreateOrder end to end (three services) vs one GetUser
	go test -run '^$$' -bench BenchmarkCreateOrder -benchtime 1x ./services/order/cmd/order/

.PHONY: keys
keys: ## write the development secrets into data/secrets: CA, identities, signing key, Consul ACL (kept if present)
	go run ./pkg/cmd/devsetup -dir data/secrets

.PHONY: run
run: consul ## run the whole platform: Consul and two replicas of each service on SQLite (Ctrl-C stops it)
	go run ./tools/run

.PHONY: smoke
smoke: ## the user journey with grpcurl against a running platform (make run or docker compose up)
	go run ./tools/smoke -grpcurl "$$(go tool -n grpcurl)" $(SMOKE_FLAGS)

.PHONY: smoke-compose
smoke-compose: ## the user journey against `docker compose up` (its CA, Consul token and admin password in data/compose)
	go run ./tools/smoke -grpcurl "$$(go tool -n grpcurl)" -cacert data/compose/ca.pem \
	  -consul-token-file data/compose/consul-reader.token -admin-password-file data/compose/admin-password $(SMOKE_FLAGS)

# The Docker Swarm stack (deploy/swarm/stack.yml, docs/swarm.md): three Consul servers, two replicas
# of each service, every secret a Docker secret. On a machine with the stand-in base images
# (tools/standins) their env file is used, and no Grafana is deployed (none can be built offline).
SWARM_ENV_FILE = $(if $(shell docker image inspect meshmart-standin/golang:1.26 >/dev/null 2>&1 && echo y),tools/standins/standins.env)

.PHONY: swarm-up
swarm-up: ## deploy the swarm stack on this engine (a single-node swarm made on the spot) and wait until it is healthy
	go run ./tools/swarm up $(if $(SWARM_ENV_FILE),-env-file $(SWARM_ENV_FILE)) $(SWARM_FLAGS)

.PHONY: swarm-down
swarm-down: ## remove the swarm stack, its secrets, configs and volumes; leave swarm mode if swarm-up entered it
	go run ./tools/swarm down

.PHONY: smoke-swarm
smoke-swarm: ## the user journey against the swarm stack (its tasks' published ports, its CA, token and admin password in data/swarm)
	flags=$$(go run ./tools/swarm smoke-flags $(if $(SWARM_ENV_FILE),-env-file $(SWARM_ENV_FILE))) && \
	  go run ./tools/smoke -grpcurl "$$(go tool -n grpcurl)" $$flags $(SMOKE_FLAGS)

.PHONY: ci
ci: tools lint check-generated breaking build ## everything CI runs, in order, ending with make test
	$(MAKE) test

.PHONY: clean
clean: ## remove the copied third-party protos and built binaries
	rm -rf third_party bin
