# The two commands: "make run" and "make test".  Both install what is missing
# (Debian packages, FerretDB) and build the module first.

.PHONY: run test test-sanitize fuzz build deps clean

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

deps:
	bash -c '. scripts/lib.sh && install_all'

clean:
	rm -rf build build-asan t/servroot
