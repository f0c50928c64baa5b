import sys

print("loading model weights...", flush=True)
print("RuntimeError: CUDA out of memory (simulated)", file=sys.stderr, flush=True)
sys.exit(3)
