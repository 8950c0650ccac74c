# veil — set-up, demo, tests and benchmarks. `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: setup demo test test-all bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "veil needs Python 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench,ray]'
	# CrypTen 0.4.1 (the MPC peer) asks for the deprecated sklearn package: kept out of
	# site-packages, imported from here by benchmarks/_crypten_peer.py
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/peers/crypten \
	    crypten==0.4.1 omegaconf==2.4.0
	@touch $@

demo: setup
	$(BIN)/veil run examples/hospitals.yaml --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ''

bench: $(BENCH_STAMP)
	$(BIN)/veil bench fl-sim --json
	$(BIN)/veil bench dp-sgd --json
	$(BIN)/veil bench accountant --json
	$(BIN)/veil bench secagg --json
	$(BIN)/veil bench he-agg --json
	$(BIN)/veil bench mpc --json
	$(BIN)/veil bench deploy --json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info

# A deployment on this machine: certificates, one coordinator and five hospital sites as separate
# processes on 127.0.0.1 (mTLS), DP + SecAgg+ (examples/hospitals_secagg.yaml), then the report.
DEPLOY_DIR ?= runs/deploy-demo
DEPLOY_ADDRESS ?= 127.0.0.1:50051
DEPLOY_SITES := client_0 client_1 client_2 client_3 client_4
.PHONY: deploy-demo
deploy-demo: setup
	rm -rf $(DEPLOY_DIR)
	$(BIN)/veil certs init $(DEPLOY_DIR)/certs $(addprefix --site ,$(DEPLOY_SITES)) > /dev/null
	$(BIN)/veil server examples/hospitals_secagg.yaml --certs $(DEPLOY_DIR)/certs \
	    --address $(DEPLOY_ADDRESS) --out $(DEPLOY_DIR)/run & server=$$!; \
	for site in $(DEPLOY_SITES); do \
	    $(BIN)/veil client --server $(DEPLOY_ADDRESS) --site $$site --certs $(DEPLOY_DIR)/certs \
	        2> $(DEPLOY_DIR)/$$site.log & \
	done; \
	wait $$server || { kill $$(jobs -p) 2> /dev/null; exit 1; }; \
	wait; echo "sites' logs: $(DEPLOY_DIR)/client_*.log"
