# The two entry points (README): `make demo` and `make test`. Both do all the set-up on a fresh Debian machine.
SHELL := /bin/bash
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
PYTEST_ARGS ?=
BENCH ?=

.PHONY: setup demo test test-db-stop bench lock clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/openastro demo

test: setup
	@url=$$(bash scripts/mariadb-test-server.sh) && url=$$(printf '%s\n' "$$url" | tail -n1) && \
	OPENASTRO_TEST_MYSQL_URL=$$url .venv/bin/python -m pytest $(PYTEST_ARGS)

# The test MariaDB stays up between runs (faster reruns); stop it before deleting a checkout.
test-db-stop:
	@sock=var/mariadb-test/mysqld.sock; \
	if mariadb-admin --protocol=socket --socket=$$sock -uroot ping >/dev/null 2>&1; then \
	  mariadb-admin --protocol=socket --socket=$$sock -uroot shutdown && echo "test MariaDB stopped"; \
	else echo "no test MariaDB running for this checkout"; fi

bench: setup
	.venv/bin/python -m benchmarks $(BENCH)

# Upgrade every dependency to its newest release and record the versions in constraints.txt.
lock:
	@[ -x .venv/bin/pip ] || bash scripts/setup.sh
	.venv/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[test]"
	@{ sed -n '1,2p' constraints.txt; .venv/bin/pip freeze --exclude-editable; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt && echo "constraints.txt updated: run 'make test' before committing"

clean:
	@# --one-file-system: never follow a bind mount left by a killed packaging/oldglibc build (its /dev)
	rm -rf --one-file-system var build dist *.egg-info
