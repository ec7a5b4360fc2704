# Regenerates the .npy fixtures of tests/data_npy.rs with NumPy: `python3 make_fixtures.py`.
import numpy as np

# (N, H, W, C) bytes: element (i, y, x, c) is ((i*2 + y)*3 + x)*3 + c.
np.save("rgb-nhwc-u1.npy", np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3))
# (N, H, W) float32: element k is k/11.
np.save("gray-f4.npy", (np.arange(3 * 2 * 2, dtype=np.float32) / np.float32(11)).reshape(3, 2, 2))
# (N, C, H, W) big-endian float64: element k is k/11.
np.save("rgb-nchw-f8-be.npy", (np.arange(12, dtype=np.float64) / 11).astype(">f8").reshape(1, 3, 2, 2))
# (N,) int64 labels.
np.save("labels-i8.npy", np.array([3, 0, 255], dtype=np.int64))
# Format version 2.0, (N, C, H, W) bytes: element k is k.
with open("v2-u1.npy", "wb") as f:
    np.lib.format.write_array(f, np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2), version=(2, 0))
# A Fortran-ordered (N, H, W) array: refused.
np.save("fortran-u1.npy", np.asfortranarray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)))
