"""One lock for every .npy / .npz read of the server.

numpy parses each array's header with `ast.literal_eval`, and CPython 3.11 keeps the AST constructor's recursion
depth in state that threads share (python/cpython gh-106905 and its kin): two threads building ASTs at once can fail
with `SystemError: AST constructor recursion depth mismatch`. It was seen once, in CI: a retraining job whose features
all came from the feature cache, read by up to 16 threads at once, failed with it. The reads are small (a header and
a few kilobytes), so serialising them costs little.
"""

import threading

NPY_READ = threading.Lock()
