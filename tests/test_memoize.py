"""The one cached-computation mechanism (paperlib.cache.memoize): a result is reused only when the
function's source, the paperlib modules it depends on and every argument (by full content) are equal."""
import importlib
import sys
import textwrap
import types

import numpy as np
import pytest
import torch

from paperlib import cache, edm, geometry, networks, sampling


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))


def test_fingerprint_sees_every_element_of_large_tensors():
    a = torch.zeros(5000)
    b = a.clone()
    b[2500] = 1e-7  # str(a) == str(b): the old key serialised tensors with str() and elided this
    assert str(a) == str(b)
    assert cache.fingerprint(a) != cache.fingerprint(b)
    assert cache.fingerprint(a) == cache.fingerprint(a.clone())
    assert cache.fingerprint(a) != cache.fingerprint(a.double())  # dtype
    assert cache.fingerprint(a) != cache.fingerprint(a.reshape(50, 100))  # shape
    assert cache.fingerprint(a.numpy()) != cache.fingerprint(b.numpy())
    assert cache.fingerprint({"x": 1, "y": [1.0, 2]}) == cache.fingerprint({"y": [1.0, 2], "x": 1})
    assert cache.fingerprint(0.1) != cache.fingerprint(0.1 + 1e-17 * 0 + 2 ** -55)  # exact floats
    assert cache.fingerprint(1) != cache.fingerprint(1.0) != cache.fingerprint(True)
    assert cache.fingerprint((1, 2)) != cache.fingerprint([1, 2])
    bf = torch.randn(7, dtype=torch.bfloat16)
    assert cache.fingerprint(bf) == cache.fingerprint(bf.clone())


def test_fingerprint_of_models_sees_weights_and_attributes():
    torch.manual_seed(0)
    net = networks.UNet(img_resolution=8, in_channels=1, model_channels=8, channel_mult=[1], num_blocks=1,
                        attn_resolutions=[])
    a = edm.Precond(net)
    b = edm.Precond(net, sigma_data=0.4)
    assert cache.fingerprint(a) != cache.fingerprint(b)  # sigma_data is a plain attribute
    c = edm.Precond(type(net)(img_resolution=8, in_channels=1, model_channels=8, channel_mult=[1], num_blocks=1,
                              attn_resolutions=[]))
    c.load_state_dict(a.state_dict())
    assert cache.fingerprint(a) == cache.fingerprint(c)
    with torch.no_grad():
        next(c.parameters()).view(-1)[0] += 1e-6
    assert cache.fingerprint(a) != cache.fingerprint(c)
    e1 = sampling.EmpiricalDenoiser(torch.zeros(3, 4))
    e2 = sampling.EmpiricalDenoiser(torch.ones(3, 4))
    assert cache.fingerprint(e1) != cache.fingerprint(e2)


def test_fingerprint_refuses_what_it_cannot_see():
    with pytest.raises(TypeError, match="seed"):
        cache.fingerprint(torch.Generator())
    with pytest.raises(TypeError, match="argument 'q'"):
        cache.fingerprint(object(), "argument 'q'")
    with pytest.raises(TypeError):
        cache.key({"t": torch.zeros(3)})  # a config dict must be plain JSON


def test_memoize_reuses_only_identical_calls():
    @cache.memoize(depends=[geometry])
    def curve(x, sigma, seed=0):
        g = torch.Generator().manual_seed(seed)
        w = geometry.max_weight_at(x + sigma * torch.randn(x.shape, generator=g), x, sigma)
        return w, torch.rand(1)  # an unseeded marker: equal markers mean the result was reused

    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    a, ma = curve(x, 0.5)
    b, mb = curve(x, 0.5)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.equal(curve(x, 0.5, seed=1)[1], ma)  # a seed is an argument: new key
    y = x.clone()
    y[3, 2] += 1e-6  # the content of an argument tensor
    assert not torch.equal(curve(y, 0.5)[1], ma)
    assert not torch.equal(curve(x, 0.5000001)[1], ma)
    assert curve.key(x, 0.5) == curve.key(x, 0.5, 0) != curve.key(x, 0.5, 1)


def test_memoize_refuses_globals_and_undeclared_modules():
    settings = {"n": 3}
    code = textwrap.dedent('''
        from paperlib import cache, geometry, sampling
        import torch

        P = {"n": 3}

        @cache.memoize(depends=[geometry])
        def reads_global(x):
            return x * P["n"]

        @cache.memoize(depends=[geometry])
        def uses_undeclared(x):
            return sampling.one_step_outputs(lambda z, s: z, x, [1.0])

        def helper(x):
            return 2 * x

        @cache.memoize(depends=[geometry])
        def calls_helper(x):
            return helper(x)
    ''')
    mod = types.ModuleType("chapter_demo")
    sys.modules["chapter_demo"] = mod
    try:
        path = cache._config.cache_dir() / "chapter_demo.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        spec = importlib.util.spec_from_file_location("chapter_demo", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["chapter_demo"] = mod
        spec.loader.exec_module(mod)
        with pytest.raises(TypeError, match="global variable 'P'"):
            mod.reads_global(torch.ones(2))
        with pytest.raises(ValueError, match="paperlib.sampling"):
            mod.uses_undeclared(torch.ones(2, 2))
        k1 = mod.calls_helper.key(torch.ones(2))
        # editing a helper the cached function calls changes the key
        path.write_text(code.replace("return 2 * x", "return 3 * x"))
        spec.loader.exec_module(mod)
        assert mod.calls_helper.key(torch.ones(2))["source"] != k1["source"]
        assert settings  # (the dict above is only there to show what a chapter must not capture)
    finally:
        sys.modules.pop("chapter_demo", None)


def test_editing_a_dependency_module_changes_the_key(tmp_path, monkeypatch):
    """A paperlib module edited (or one it imports) gives a new code version and a new key."""
    pkg = tmp_path / "pkg"
    (pkg / "paperlib").mkdir(parents=True)
    (pkg / "paperlib" / "__init__.py").write_text("")
    (pkg / "paperlib" / "low.py").write_text("def f(x):\n    return x + 1\n")
    (pkg / "paperlib" / "high.py").write_text("from . import low\n\ndef g(x):\n    '''doc'''\n    return low.f(x)\n")
    saved = {k: v for k, v in sys.modules.items() if k == "paperlib" or k.startswith("paperlib.")}
    try:
        for k in saved:
            del sys.modules[k]
        monkeypatch.syspath_prepend(str(pkg))
        high = importlib.import_module("paperlib.high")
        v1 = cache.code_version(high)
        assert [m.__name__ for m in cache.module_closure(high)] == ["paperlib.high", "paperlib.low"]
        (pkg / "paperlib" / "high.py").write_text(
            "from . import low\n\ndef g(x):\n    '''another docstring'''\n    # a comment\n    return low.f(x)\n")
        importlib.reload(high)
        assert cache.code_version(high) == v1  # docstrings and comments do not count
        (pkg / "paperlib" / "low.py").write_text("def f(x):\n    return x + 2\n")
        importlib.reload(sys.modules["paperlib.low"])
        assert cache.code_version(high) != v1  # an edit in a module it imports does
    finally:
        for k in [k for k in sys.modules if k == "paperlib" or k.startswith("paperlib.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_module_closure_leaves_out_infrastructure():
    names = [m.__name__ for m in cache.module_closure(sampling)]
    assert "paperlib.sampling" in names and "paperlib.edm" in names and "paperlib.geometry" in names
    assert not {"paperlib.cache", "paperlib.config", "paperlib.report", "paperlib.plotting"} & set(names)
    with pytest.raises(TypeError, match="paperlib modules"):
        cache.memoize(depends=[np])
