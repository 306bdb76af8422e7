# The two commands: "make run" and "make test".  Both install what is missing
# (Debian packages, FerretDB) and build the module first.

.PHONY: run test build deps clean

run:
	scripts/run.sh

test:
	scripts/test.sh

build:
	scripts/build-module.sh

deps:
	bash -c '. scripts/lib.sh && install_all'

clean:
	rm -rf build t/servroot
