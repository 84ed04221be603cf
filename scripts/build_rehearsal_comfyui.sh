#!/usr/bin/env bash
# Build a ComfyUI of the pinned stack for rehearsals on a CPU-only machine, outside the repository,
# with a venv made from the image lock (scripts/install_from_lock.sh), so that the rehearsal runs
# the versions the image ships.
#
#   scripts/build_rehearsal_comfyui.sh MIRRORS_DIR TARGET_DIR
#
# MIRRORS_DIR holds bare git mirrors, one folder each named owner+name (e.g. Comfy-Org+ComfyUI/repo,
# as the search tool's `fetch` brings them) of:
#   Comfy-Org/ComfyUI                                         a125cd84 (ComfyUI itself)
#   starsFriday/ComfyUI-WanVideoWrapper-Enhanced-Infinitetalk 6b286552 (kijai's WanVideoWrapper
#       commit lies in this fork's history; its own HEAD is a different, renamed node pack)
#   kijai/ComfyUI-KJNodes                                     aa89c147
#   Kosinkadink/ComfyUI-VideoHelperSuite                      6e7f6386
#   kijai/ComfyUI-MelBandRoFormer                             b40e2632
# TARGET_DIR gets ComfyUI/ (with custom_nodes/) and venv/. Start it with e.g.
#   cd TARGET_DIR/ComfyUI && TARGET_DIR/venv/bin/python main.py --cpu --listen 127.0.0.1 --port 8189
#
# torch (TORCH_SET, default auto):
#   lock  the lock's own set: torch 2.8.0, torchvision 0.23.0, torchaudio 2.8.0 (PyPI's CUDA 12.8
#         builds) with the nvidia-*-cu12 and triton wheels the lock lists, hash-checked. The CUDA
#         build of torch imports and computes on a machine without a GPU; it only needs its
#         nvidia-* libraries present (several GB).
#   cpu   a CPU torch wheel from pip's find-links folders (e.g. /opt/wheels) with torchvision 0.28.0
#         and torchaudio 2.11.1 (CUDA builds, --no-deps) made loadable by small stand-ins for the
#         libc10_cuda/libtorch_cuda symbols they link against (patchelf, g++).
#   auto  lock, and cpu if the lock's set cannot be installed or does not run.
# Every other package comes from requirements-image.lock (install_from_lock.sh).
set -euo pipefail
MIRRORS="$(cd "${1:?usage: build_rehearsal_comfyui.sh MIRRORS_DIR TARGET_DIR}" && pwd)"
TARGET="${2:?usage: build_rehearsal_comfyui.sh MIRRORS_DIR TARGET_DIR}"
TORCH_SET="${TORCH_SET:-auto}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="${LOCK:-$HERE/../requirements-image.lock}"
case "$TORCH_SET" in lock|cpu|auto) ;; *) echo "TORCH_SET must be lock, cpu or auto" >&2; exit 2 ;; esac
mkdir -p "$TARGET"
TARGET="$(cd "$TARGET" && pwd)"
VENV="$TARGET/venv"
PY="$VENV/bin/python"

git_dir() {  # the bare repository inside a fetched mirror folder
  local d="$MIRRORS/$1"
  [ -d "$d" ] || { echo "missing mirror $d (fetch github:${1/+//} first)" >&2; exit 1; }
  if [ -f "$d/HEAD" ]; then echo "$d"; else dirname "$(find "$d" -maxdepth 2 -name HEAD -type f | head -1)"; fi
}

# Snapshots leave out blobs of 4 MiB or more, so `git archive` of a whole commit fails; extract
# every path whose blob is present and list the ones that are not.
extract() {  # mirror commit destination
  local gd; gd="$(git_dir "$1")"
  mkdir -p "$3"
  git --git-dir="$gd" cat-file -e "$2^{commit}" || { echo "commit $2 not in $1" >&2; exit 1; }
  local present missing
  present="$(mktemp)"; missing="$(mktemp)"
  git --git-dir="$gd" ls-tree -r "$2" | while read -r _mode type sha path; do
    [ "$type" = blob ] || continue
    if git --git-dir="$gd" cat-file -e "$sha" 2>/dev/null; then echo "$path"; else echo "$path" >>"$missing"; fi
  done >"$present"
  # git archive names each absent blob on stderr even when the pathspec leaves it out; the check
  # below is what tells whether everything present arrived.
  tr '\n' '\0' <"$present" | xargs -0 git --git-dir="$gd" archive --format=tar "$2" -- 2>/dev/null | tar -x --ignore-zeros -C "$3"
  while read -r path; do [ -e "$3/$path" ] || { echo "extraction of $1 incomplete: $path" >&2; exit 1; }; done <"$present"
  if [ -s "$missing" ]; then echo "absent from the $1 snapshot (large files):"; sed 's/^/  /' "$missing"; fi
  rm -f "$present" "$missing"
}

echo "== sources"
rm -rf "$TARGET/ComfyUI"
extract Comfy-Org+ComfyUI a125cd84b054a57729b5eecab930ca9408719832 "$TARGET/ComfyUI"
CN="$TARGET/ComfyUI/custom_nodes"
extract starsFriday+ComfyUI-WanVideoWrapper-Enhanced-Infinitetalk 6b286552b7ad470daf2f664ba9396781921ca6d2 "$CN/ComfyUI-WanVideoWrapper"
extract kijai+ComfyUI-KJNodes aa89c147d04a03173a09604999b703c9e10916e1 "$CN/ComfyUI-KJNodes"
extract Kosinkadink+ComfyUI-VideoHelperSuite 6e7f63867584bb1fb4944d36172e7f98436da9a1 "$CN/ComfyUI-VideoHelperSuite"
extract kijai+ComfyUI-MelBandRoFormer b40e263224778ec417114d91d8b3b39934e30de5 "$CN/ComfyUI-MelBandRoFormer"

echo "== system packages (ffmpeg for VideoHelperSuite; g++ and patchelf for the cpu set's stubs)"
if ! command -v ffmpeg >/dev/null || ! command -v patchelf >/dev/null || ! command -v g++ >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg patchelf g++ >/dev/null
fi

# A CPU computation through each of the three libraries: tells whether the set runs here.
torch_runs() {
  "$PY" - <<'PY'
import torch, torchvision, torchaudio
from torchvision.ops import nms
x = torch.randn(64, 64)
assert torch.isfinite(x @ x).all()
keep = nms(torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]]), torch.tensor([0.9, 0.8]), 0.5)
mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000)(torch.randn(1, 16000))
print("torch", torch.__version__, "torchvision", torchvision.__version__, "torchaudio", torchaudio.__version__,
      "cuda build", torch.version.cuda, "cuda available", torch.cuda.is_available(),
      "| nms", keep.tolist(), "mel", tuple(mel.shape))
PY
}

install_lock_set() {
  # The lock's torch, torchvision, torchaudio, triton and nvidia-* entries with their hashes (the
  # part install_from_lock.sh leaves out, apart from sageattention: CUDA kernels only).
  local part="$TARGET/torch-from-lock.txt"
  awk '
      /^[A-Za-z0-9]/ { name = tolower($1); sub(/==.*/, "", name)
                       keep = (name ~ /^(torch|torchvision|torchaudio|triton|nvidia-.*)$/) }
      /^--/ { print; next }
      keep { print }
  ' "$LOCK" >"$part"
  grep -q '^torch==' "$part" || { echo "no torch entry in $LOCK" >&2; return 1; }
  rm -rf "$VENV"
  LOCK="$LOCK" "$HERE/install_from_lock.sh" "$VENV" --require-hashes --only-binary=:all: -r "$part"
}

install_cpu_set() {
  local wheel="" d w
  for d in $(pip config list 2>/dev/null | sed -n "s/.*find-links='\([^']*\)'.*/\1/p") ${PIP_FIND_LINKS:-} /opt/wheels; do
    for w in "$d"/torch-*+cpu-*.whl; do [ -f "$w" ] && wheel="$w"; done
  done
  [ -n "$wheel" ] || { echo "no CPU torch wheel in pip's find-links folders" >&2; return 1; }
  rm -rf "$VENV"
  LOCK="$LOCK" "$HERE/install_from_lock.sh" "$VENV" "$wheel" torchvision==0.28.0 torchaudio==2.11.1

  # torchvision/torchaudio exist on the registry only as CUDA builds: their libraries need
  # libc10_cuda.so / libtorch_cuda.so. These stand-ins provide the few symbols; each throws if
  # ever called, and device_count() is 0.
  local sp libs src cudart so
  sp="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  libs="$sp/torchvision.libs"
  mkdir -p "$libs"
  src="$(mktemp --suffix=.cpp)"
  cat >"$src" <<'CPP'
#include <atomic>
#include <stdexcept>
#include <string>
#include <cstdint>
static void fail(const char* w) { throw std::runtime_error(std::string("CUDA is not available (CPU-only torch; stub for ") + w + ")"); }
namespace c10 { namespace cuda {
class CUDAStream { public: void synchronize() const; bool query() const; void* stream() const; char pad[16]; };
void CUDAStream::synchronize() const { fail("CUDAStream::synchronize"); }
bool CUDAStream::query() const { fail("CUDAStream::query"); return true; }
void* CUDAStream::stream() const { fail("CUDAStream::stream"); return nullptr; }
signed char device_count() noexcept { return 0; }
signed char current_device() { fail("current_device"); return 0; }
signed char ExchangeDevice(signed char) { fail("ExchangeDevice"); return 0; }
signed char MaybeSetDevice(signed char) { fail("MaybeSetDevice"); return 0; }
CUDAStream getStreamFromPool(bool, signed char) { fail("getStreamFromPool"); return CUDAStream(); }
CUDAStream getStreamFromPool(int, signed char) { fail("getStreamFromPool"); return CUDAStream(); }
CUDAStream getCurrentCUDAStream(signed char) { fail("getCurrentCUDAStream"); return CUDAStream(); }
CUDAStream getDefaultCUDAStream(signed char) { fail("getDefaultCUDAStream"); return CUDAStream(); }
void setCurrentCUDAStream(CUDAStream) { fail("setCurrentCUDAStream"); }
void c10_cuda_check_implementation(int, const char*, const char*, unsigned int, bool) { fail("c10_cuda_check_implementation"); }
int GetDevice(signed char*) { fail("GetDevice"); return 1; }
int SetDevice(signed char, bool) { fail("SetDevice"); return 1; }
namespace CUDACachingAllocator { std::atomic<void*> allocator{nullptr}; }
}}
namespace at { namespace cuda { void* getCurrentDeviceProperties() { fail("getCurrentDeviceProperties"); return nullptr; } }}
extern "C" {
int32_t aoti_torch_get_current_cuda_stream(int32_t, void**) { return 1; }
int32_t torch_c10_cuda_check_msg(int32_t, const char*, const char*, uint32_t, bool, char**) { return 1; }
int32_t torch_c10_cuda_free_error_msg(char*) { return 1; }
int32_t torch_cuda_stream_synchronize(void*, int32_t) { return 1; }
int32_t torch_get_cuda_stream_from_pool(bool, int32_t, void**) { return 1; }
int32_t torch_set_current_cuda_stream(void*, int32_t) { return 1; }
}
CPP
  g++ -shared -fPIC -O1 -o "$libs/libc10_cuda.so" "$src"
  rm -f "$src"
  echo 'void __torch_cuda_stub_empty(void){}' | gcc -shared -fPIC -x c -o "$libs/libtorch_cuda.so" -
  cudart="$(find "$libs" -maxdepth 1 -name 'libcudart.*.so.*' | head -1)"
  if [ -n "$cudart" ]; then ln -sf "$(basename "$cudart")" "$libs/libcudart.so.13"; fi
  # shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader, not the shell
  patchelf --set-rpath '$ORIGIN/../torchvision.libs' "$sp/torchvision/_C.so"
  for so in "$sp"/torchaudio/lib/*.so; do
    # shellcheck disable=SC2016
    patchelf --set-rpath '$ORIGIN:$ORIGIN/../../torchvision.libs' "$so"
  done
}

echo "== venv from the image lock (torch set: $TORCH_SET)"
used=""
if [ "$TORCH_SET" != cpu ]; then
  if install_lock_set && torch_runs; then
    used="lock (torch 2.8.0 CUDA 12.8 build from the lock, running on CPU)"
  elif [ "$TORCH_SET" = lock ]; then
    echo "the lock's torch set could not be installed or does not run here" >&2; exit 1
  else
    echo "the lock's torch set could not be installed or does not run here; falling back to the cpu set" >&2
  fi
fi
if [ -z "$used" ]; then
  install_cpu_set
  torch_runs
  used="cpu (CPU torch wheel, torchvision 0.28.0 / torchaudio 2.11.1 with CUDA stubs)"
fi

echo "== installed"
"$PY" - <<'PY'
from importlib import metadata
for name in ("torch", "torchvision", "torchaudio", "transformers", "diffusers", "peft", "accelerate", "numpy"):
    print(f"  {name} {metadata.version(name)}")
PY
echo "torch set: $used"
echo "built $TARGET; start: cd $TARGET/ComfyUI && $PY main.py --cpu --listen 127.0.0.1 --port 8189"
