#!/usr/bin/env bash
# Installs everything floorguard needs on Debian 12, as root: Debian packages for the OS
# surfaces the agent talks to and the tools the tests drive, and a virtual environment in
# .venv holding floorguard and its Python dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev python3-gi python3-dbus gcc
  umockdev libumockdev0 gir1.2-umockdev-1.0
  dbus xvfb xdotool xprintidle xauth x11-utils libx11-6 libxss1 libnotify-bin
  cups cups-client cups-bsd cups-ipp-utils cups-filters libcups2-dev poppler-utils ghostscript
  chromium postgresql fonts-noto-cjk
  iproute2 util-linux systemd procps openssl
  bindfs e2fsprogs
  libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libfontconfig1
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's own interpreter, so that Debian's python3-gi (umockdev bindings) and python3-dbus
# load in the venv with the same ABI.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Only gi and dbus from Debian's dist-packages, so nothing else of Debian's shadows the venv.
mkdir -p .venv/debian-gi
for mod in gi dbus _dbus_bindings.cpython-311-x86_64-linux-gnu.so _dbus_glib_bindings.cpython-311-x86_64-linux-gnu.so; do
  src=/usr/lib/python3/dist-packages/$mod
  [ -e "$src" ] && ln -sfn "$src" ".venv/debian-gi/$mod"
done
echo "$(pwd)/.venv/debian-gi" > "$site/floorguard-debian-gi.pth"

.venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,postgresql]'
# python-dbusmock's dbus-python dependency comes from Debian (above), so install it alone.
.venv/bin/pip install -q --disable-pip-version-check --no-deps 'python-dbusmock>=0.31,<1'
