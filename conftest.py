"""Test-session environment, also seen by the notebook kernels that nbval starts."""
import os
import tempfile

os.environ.setdefault("REWINDKIT_PROFILE", "smoke")  # notebooks run their smoke profile under nbval
os.environ.setdefault("REWINDKIT_OUT", tempfile.mkdtemp(prefix="rewindkit-test-"))  # keep figures/ clean
os.environ.setdefault("REWINDKIT_PROGRESS", "0")
