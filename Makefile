# The two entry points (README): `make demo` and `make test`. Both do all the set-up on a fresh Debian machine.
SHELL := /bin/bash
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
PYTEST_ARGS ?=
BENCH ?=

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/openastro demo

test: setup
	@url=$$(bash scripts/mariadb-test-server.sh) && url=$$(printf '%s\n' "$$url" | tail -n1) && \
	OPENASTRO_TEST_MYSQL_URL=$$url .venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python -m benchmarks $(BENCH)

clean:
	rm -rf var build dist *.egg-info
