# The two commands of the quick start are `make demo` and `make test`; both install first,
# and `make test` installs the system packages it needs (deps/debian-packages.txt) too.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?=
BENCH_DURATION ?= 5

.PHONY: install deps test demo bench lint typecheck clean image image-test image-arm64-test

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# As root: installs what is missing; otherwise prints the apt-get line and fails.
deps:
	deps/install

test: deps $(STAMP)
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/edgeloop demo $(if $(DURATION),--duration $(DURATION))

# The appliance image (image/README.md): as root; Debian packages and wheels are cached
# in image/cache/ (IMAGE_CACHE), the results go to build/image/ (IMAGE_OUT).
# IMAGE_ARCH=arm64: the Raspberry Pi 4 image, in build/image-arm64/.
IMAGE_ARCH ?= amd64
ifeq ($(IMAGE_ARCH),amd64)
IMAGE_OUT ?= build/image
else
IMAGE_OUT ?= build/image-$(IMAGE_ARCH)
endif
ARM64_OUT := build/image-arm64
IMAGE_SOURCES := pyproject.toml $(shell find runtime drivers config systemd image -type f \
	-not -path 'image/cache/*' -not -name '*.pyc' -not -path '*.egg-info/*')

image: $(IMAGE_OUT)/disk.img

$(IMAGE_OUT)/disk.img: $(STAMP) $(IMAGE_SOURCES)
	IMAGE_ARCH=$(IMAGE_ARCH) IMAGE_OUT=$(abspath $(IMAGE_OUT)) image/build

# Boots the image under QEMU (TCG) and checks it from the host: tests/image. Bounded:
# the build by its own steps, the boot test by timeout.
image-test: deps image
	EDGELOOP_IMAGE=$(abspath $(IMAGE_OUT)) timeout --kill-after=30 3000 $(BIN)/pytest -q tests/image

# The Raspberry Pi 4 image, built (under qemu-user) and checked from the host without
# booting it: tests/image/test_arm64_image.py.
image-arm64-test: deps
	$(MAKE) image IMAGE_ARCH=arm64 IMAGE_OUT=$(ARM64_OUT)
	EDGELOOP_IMAGE_ARM64=$(abspath $(ARM64_OUT)) timeout --kill-after=30 900 \
		$(BIN)/pytest -q tests/image/test_arm64_image.py

# Each benchmark prints its table and writes its figures to bench/results/ (not in git).
bench: $(STAMP)
	mkdir -p bench/results
	$(BIN)/python bench/world_bench.py --duration $(BENCH_DURATION) --json bench/results/world_bench.json
	for load in idle cpu io; do \
		$(BIN)/python bench/control_loop.py --duration $(BENCH_DURATION) --load $$load \
			--json bench/results/control_loop_$$load.json || exit 1; \
	done
	$(BIN)/python bench/ingest.py --duration $(BENCH_DURATION) --json bench/results/ingest.json
	$(BIN)/python bench/fanout.py --duration $(BENCH_DURATION) --json bench/results/fanout.json
	$(BIN)/python bench/dashboard.py --duration $(BENCH_DURATION) --json bench/results/dashboard.json
	$(BIN)/python bench/modbus_poll.py --duration $(BENCH_DURATION) --json bench/results/modbus_poll.json
	$(BIN)/python bench/can_rx.py --duration $(BENCH_DURATION) --json bench/results/can_rx.json
	$(BIN)/python bench/audit.py --duration $(BENCH_DURATION) --json bench/results/audit.json
	$(BIN)/python bench/logger.py --duration $(BENCH_DURATION) --json bench/results/logger.json
	$(BIN)/python bench/uplink.py --duration $(BENCH_DURATION) --json bench/results/uplink.json
	for load in idle io; do \
		$(BIN)/python bench/estop.py --duration $(BENCH_DURATION) --load $$load \
			--json bench/results/estop_$$load.json || exit 1; \
	done

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow the package-dir mapping (edgeloop -> runtime/, edgeloop.drivers ->
# drivers/), so it checks a tree of symlinks laid out as the installed package.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/edgeloop
	for f in runtime/*; do ln -s ../../../$$f build/typecheck/edgeloop/; done
	ln -s ../../../drivers build/typecheck/edgeloop/drivers
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p edgeloop

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
