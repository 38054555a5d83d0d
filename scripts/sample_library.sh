#!/usr/bin/env bash
# Builds the sample audio library `make run` indexes (see scripts/sample_library.py): generated
# sounds always, Debian sound packages and espeak-ng/flite voices where installed. Idempotent.
#   scripts/sample_library.sh DEST
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/sample_library.py" "$@"
