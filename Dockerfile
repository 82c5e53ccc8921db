# The imager as a scratch-based container image, laid out like Talos's imager image:
# the binary at /usr/bin/imager and the base assets at /usr/install/<arch>/.
#
# Build context: this repository after `hack/build.sh` (which builds the imager statically
# linked and the base assets into _out/assets/):
#
#   hack/build.sh && docker build -t imager .
#   docker run --rm -v "$PWD/_out:/out" -e SOURCE_DATE_EPOCH imager metal --meta 0xa=...
#
# Nothing else is needed at run time: no shell, no libc, no mkfs/xorriso/qemu-img, no
# privileges and no /dev; temporary files live in the output directory (with --tar-to-stdout
# and no --output, under $TMPDIR or /tmp). The test tests/tests/container.rs runs the binary
# in an empty root holding only these files.
#
# The reproducible, signed image is not built from this file: `imager self-image` writes the
# same file system (plus world-writable /out and /tmp, which FROM scratch cannot create
# without a shell) with the project's own OCI writer, byte-identical on every build
# (docs/formats/imager-image.md, hack/imager-image.sh).
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/imager /usr/bin/imager
COPY _out/assets/amd64/ /usr/install/amd64/
WORKDIR /out
ENTRYPOINT ["/usr/bin/imager"]
