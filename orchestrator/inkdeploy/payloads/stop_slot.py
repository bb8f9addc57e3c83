"""Stop an app slot on its host, now or later, as rollout/stop-slot.yml does: the orchestrator's
fast path for that playbook (inkdeploy/remote.py ships this file over SSH; standard library
only, Python 3.9+).

  1. cancel an earlier pending stop of the slot (its transient timer; none is fine);
  2. AFTER_S == 0: stop the unit now (Gunicorn finishes its requests first);
     AFTER_S > 0: a transient systemd timer on the host stops it that much later (a slot kept
     for instant rollback), cancelled again if a later step re-uses the slot.

params: unit (inkapp@green.service), timer (inkdeploy-stop-inkapp-green), after_s.
"""

import subprocess


def run(params):
    unit, timer, after_s = params["unit"], params["timer"], int(params.get("after_s", 0))
    subprocess.run(["systemctl", "stop", f"{timer}.timer"], capture_output=True, check=False)
    if after_s > 0:
        argv = [
            "systemd-run", f"--unit={timer}", f"--on-active={after_s}s",
            "--timer-property=AccuracySec=1s", "/bin/systemctl", "stop", unit,
        ]  # fmt: skip
    else:
        argv = ["systemctl", "stop", unit]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip()
        return {"failed": True, "msg": f"{' '.join(argv)} exited {proc.returncode}: {why}"}
    return {"changed": True, "stopped_now": after_s == 0, "stop_after_s": after_s}
