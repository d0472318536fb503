"""INT8 variants on onnxruntime CPU: Q/DQ stays unfused on CPUs without int8 dot products."""

import pytest

from runtime.backends import ort as ort_backend

ort = pytest.importorskip("onnxruntime")
KEY = "session.disable_quant_qdq"


def _entry(so) -> str:
    try:
        return so.get_session_config_entry(KEY)
    except Exception:  # onnxruntime raises when the entry was never set
        return ""


@pytest.mark.parametrize("dot_product,quantized,want", [
    (False, True, "1"), (True, True, ""), (False, False, ""),
])  # fmt: skip
def test_quantized_sessions_unfuse_qdq_only_without_dot_products(
    monkeypatch, dot_product, quantized, want
):
    monkeypatch.setattr(ort_backend, "int8_dot_product_cpu", lambda: dot_product)
    assert _entry(ort_backend.session_options(ort, 1, quantized=quantized)) == want


def test_cpu_flags(monkeypatch, tmp_path):
    ort_backend.int8_dot_product_cpu.cache_clear()
    monkeypatch.setattr(ort_backend.platform, "machine", lambda: "aarch64")
    assert ort_backend.int8_dot_product_cpu() is True
    ort_backend.int8_dot_product_cpu.cache_clear()
    monkeypatch.setattr(ort_backend.platform, "machine", lambda: "x86_64")
    for flags, want in (("fpu avx2 fma", False), ("fpu avx2 avx512_vnni", True),
                        ("avx2 avx_vnni", True)):  # fmt: skip
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(ort_backend, "Path", lambda _p, f=cpuinfo: f)
        ort_backend.int8_dot_product_cpu.cache_clear()
        assert ort_backend.int8_dot_product_cpu() is want, flags
    ort_backend.int8_dot_product_cpu.cache_clear()
