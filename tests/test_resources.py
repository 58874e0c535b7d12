"""resources/: verify_data.py passes on the vendored files and catches a broken out_of_class block."""

import shutil
import subprocess
import sys


def test_verify_data_passes_and_catches_an_out_of_class_lineage_of_a_class(root, tmp_path):
    script = root / "resources" / "verify_data.py"
    done = subprocess.run([sys.executable, str(script), "--quiet"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "ALL CHECKS PASSED" in done.stdout
    assert "== out of class: 15 lineage(s)" in done.stdout
    for name in ("NC_045512.2.fasta", "NC_045512.2.gb"):
        shutil.copy(root / "resources" / name, tmp_path / name)
    text = (root / "resources" / "variants.yaml").read_text()
    assert text.count('- lineage: "B.1.2"\n') == 1
    (tmp_path / "variants.yaml").write_text(text.replace('- lineage: "B.1.2"\n', '- lineage: "AY.4"\n'))
    broken = subprocess.run(
        [sys.executable, str(script), "--quiet", "--data-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert broken.returncode == 1 and "out-of-class AY.4 is a lineage of a class" in broken.stdout
