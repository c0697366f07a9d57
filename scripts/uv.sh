# Sourced by the scripts: sets `uv` to a command running uv, installing it (pip) if missing.
if command -v uv >/dev/null 2>&1; then uv=(uv)
else
  python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.5"
  uv=(python3 -m uv)
fi
