# shellcheck shell=bash
# Sourced by the infra scripts: `platform KEY.PATH` prints one dotted key of
# components/core/platform.yaml (the single source of ports, image and versions).
# Needs REPO_ROOT and PYTHON (any python3 with PyYAML; Ubuntu's cloud-init has it).
platform() {
  "$PYTHON" - "$REPO_ROOT/components/core/platform.yaml" "$1" <<'PY'
import sys, yaml
value = yaml.safe_load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[key]
print(value)
PY
}
