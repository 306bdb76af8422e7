# The two commands: "make run" and "make test".  Both install what is missing
# (Debian packages, FerretDB) and build the module first.  "make deb" packages
# the module for Debian's nginx: build/libnginx-mod-foko-chat_<version>_<arch>.deb

.PHONY: run test test-sanitize fuzz build deb image-test soak deps clean

run:
	scripts/run.sh

test:
	scripts/test.sh

# the suite again with the module built with AddressSanitizer and UBSan
test-sanitize:
	FOKO_SANITIZE=1 scripts/test.sh

# the fuzz targets in fuzz/, FUZZ_TIME seconds each (default 60)
fuzz:
	fuzz/run.sh

build:
	scripts/build-module.sh

# the module as a package, the way Debian packages its nginx modules
deb: build
	scripts/deb.sh

# the container image (docker/) built with podman and run against FerretDB
image-test:
	scripts/image-test.sh

# thousands of WebSocket clients for minutes, with a reload and a worker
# kill in the middle: lost, duplicated, latency, memory (bench/soak/)
soak:
	bench/soak/run.sh

deps:
	bash -c '. scripts/lib.sh && install_all && install_packages "$${test_apt_packages[@]}"'

clean:
	rm -rf build build-asan t/servroot
