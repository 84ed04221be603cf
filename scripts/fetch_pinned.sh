#!/usr/bin/env bash
# Put a git repository at exactly one commit into a folder, and prove it is that commit.
#
#   fetch_pinned.sh DEST REPO_URL COMMIT_SHA
#
# Used by the Dockerfile for ComfyUI and each custom node. COMMIT_SHA must be a full 40-digit SHA:
# a branch or tag could move under the image. Only that commit is fetched (GitHub serves single
# commits by SHA); a server that refuses gets a full clone instead. The .git folder is kept so that
# `git -C DEST rev-parse HEAD` inside the image shows what is installed.
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 DEST REPO_URL COMMIT_SHA" >&2
    exit 64
fi
dest=$1
repo=$2
commit=$3

if ! [[ "$commit" =~ ^[0-9a-f]{40}$ ]]; then
    echo "fetch_pinned: '$commit' for $repo is not a full 40-digit commit SHA" >&2
    exit 64
fi
if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
    echo "fetch_pinned: $dest already exists and is not empty" >&2
    exit 1
fi

git init --quiet "$dest"
git -C "$dest" remote add origin "$repo"
if ! git -C "$dest" fetch --quiet --depth 1 origin "$commit" 2>/dev/null; then
    echo "fetch_pinned: $repo does not serve single commits; fetching its whole history" >&2
    git -C "$dest" fetch --quiet origin
fi
if ! git -C "$dest" -c advice.detachedHead=false checkout --quiet "$commit" 2>/dev/null; then
    echo "fetch_pinned: commit $commit is not in $repo" >&2
    exit 1
fi

actual=$(git -C "$dest" rev-parse HEAD)
if [ "$actual" != "$commit" ]; then
    echo "fetch_pinned: $dest is at $actual, expected $commit" >&2
    exit 1
fi
echo "$repo @ $commit -> $dest"
