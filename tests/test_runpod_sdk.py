"""The SDK imported through runpod_sdk: its processor name still right, its CPU probe not run, and
the handler's start-up path free of what a job may never need (boto3 without a bucket)."""

from __future__ import annotations

import json
import subprocess
import sys

from infinitetalk_worker.config import REPO_ROOT


def _python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_sdk_reports_the_processor_without_probing_in_a_subprocess():
    facts = _python(
        "import json, subprocess\n"
        "started = []\n"
        "real = subprocess.Popen.__init__\n"
        "def spy(self, *a, **k):\n"
        "    started.append(a[0] if a else k.get('args'))\n"
        "    real(self, *a, **k)\n"
        "subprocess.Popen.__init__ = spy\n"
        "from infinitetalk_worker.runpod_sdk import runpod, processor_brand\n"
        "import cpuinfo\n"
        "from runpod.serverless.utils import rp_debugger\n"
        "print(json.dumps({'processor': rp_debugger.PROCESSOR, 'brand': processor_brand(),\n"
        "                  'subprocesses': [str(s) for s in started],\n"
        "                  'restored': cpuinfo.get_cpu_info.__name__}))")
    assert facts["processor"] == facts["brand"] and facts["processor"]
    assert not any("cpuinfo" in s for s in facts["subprocesses"]), facts["subprocesses"]
    assert facts["restored"] == "get_cpu_info"


def test_importing_the_handler_loads_no_s3_code():
    facts = _python("import json, sys, handler; print(json.dumps({'boto3': 'boto3' in sys.modules}))")
    assert facts == {"boto3": False}
