"""Install TensorFlow's C library from the official pip wheel into a project-local folder.

Usage: python3 scripts/setup_tf.py WHEEL OUT_DIR

Extracts libtensorflow_cc.so.2 (which carries the C API) and libtensorflow_framework.so.2,
adds the unversioned names tensorflow-sys links against, the C headers, and a pkg-config file
`tensorflow.pc`, so `PKG_CONFIG_PATH=OUT_DIR cargo build` links without downloading anything.
"""
import os
import sys
import zipfile

LIBS = ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, out = sys.argv[1], os.path.abspath(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    inc = os.path.join(out, "include")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for lib in LIBS:
            member = "tensorflow/" + lib
            if member not in names:
                print(f"error: {wheel} has no {member}", file=sys.stderr)
                return 1
            dst = os.path.join(out, lib)
            with z.open(member) as src, open(dst + ".part", "wb") as f:
                while True:
                    chunk = src.read(1 << 22)
                    if not chunk:
                        break
                    f.write(chunk)
            os.chmod(dst + ".part", 0o755)
            os.replace(dst + ".part", dst)
        prefix = "tensorflow/include/tensorflow/c/"
        for n in names:
            if n.startswith(prefix) and n.endswith(".h"):
                rel = n[len("tensorflow/include/"):]
                dst = os.path.join(inc, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with z.open(n) as src, open(dst, "wb") as f:
                    f.write(src.read())
    links = {
        "libtensorflow.so": "libtensorflow_cc.so.2",
        "libtensorflow.so.2": "libtensorflow_cc.so.2",
        "libtensorflow_framework.so": "libtensorflow_framework.so.2",
    }
    for name, target in links.items():
        p = os.path.join(out, name)
        if os.path.lexists(p):
            os.remove(p)
        os.symlink(target, p)
    with open(os.path.join(out, "tensorflow.pc"), "w") as f:
        f.write(
            f"prefix={out}\n"
            "libdir=${prefix}\n"
            "includedir=${prefix}/include\n\n"
            "Name: tensorflow\n"
            "Description: TensorFlow C library (from the official pip wheel)\n"
            "Version: 2.21.0\n"
            "Libs: -L${libdir} -ltensorflow -ltensorflow_framework\n"
            "Cflags: -I${includedir}\n"
        )
    print(f"TensorFlow C library installed in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
