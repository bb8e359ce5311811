"""`manual-backprop trace`: one update written out in the lecture's notation, with autograd's numbers beside it."""

import re

import pytest
import torch

from commands.cli import build_parser, main, random_problem
from commands.trace import MAZUR_PRINTED, mazur_example, trace_update
from commands.trace_format import plain, render

from helpers import close_to_printed

_LINE = re.compile(r"^  (?P<left>\S.*?\S)(?:\s{3,}(?P<ag>\S+))?$")


def parse_trace(text: str) -> dict:
    """{lhs: (manual value, autograd value or None)} from the text format's lines 'lhs = ... = value   autograd'."""
    values = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or (" = " not in m["left"] and " ← " not in m["left"]):
            continue
        left = m["left"]
        lhs = re.split(r" = | ←", left)[0]
        value = left.rsplit(" ", 1)[-1]
        values[lhs] = (float(value), None if m["ag"] is None else float(m["ag"]))
    return values


def run(argv, capsys):
    code = main(["trace", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_mazur_trace_reproduces_his_printed_numbers(capsys):
    """Mazur (2015) prints E_total, the activities, dE/dw and the updated w1..w8; the default trace shows each."""
    code, out, _ = run(["--example", "mazur"], capsys)
    assert code == 0
    got = parse_trace(out)
    p = MAZUR_PRINTED
    expected = {  # our line -> (his printed number, the factor from his sign or his dE/dw to our line)
        "E": ("E_total", 1), "net^1_1": ("net_h1", 1), "x^1_1": ("out_h1", 1), "x^1_2": ("out_h2", 1),
        "net^2_1": ("net_o1", 1), "x^2_1": ("out_o1", 1), "x^2_2": ("out_o2", 1),
        "1/2 · 2(y_1 - x^2_1)": ("dE/dout_o1", -1),  # the lecture's factor is -dE/dx
        "f'(net^2_1)": ("dout_o1/dnet_o1", 1), "δ^2_1": ("delta_o1", -1),  # his delta is dE/dnet, ours minus it
        "Σ_c δ^2_c w^2_{c,1}": ("dE/dout_h1", -1), "f'(net^1_1)": ("dout_h1/dnet_h1", 1),
        "∂E / ∂w^2_{1,1} (w_5)": ("dE/dw5", 1), "∂E / ∂w^1_{1,1} (w_1)": ("dE/dw1", 1),
    }
    for lhs, (his, factor) in expected.items():
        value, autograd = got[lhs]
        assert close_to_printed(value / factor, p[his]), f"{lhs} = {value!r}, Mazur's {his} = {p[his]}"
        assert autograd == value, f"{lhs}: autograd {autograd} beside manual {value}"
    for k, j, i, name in [(2, 1, 1, "w5"), (2, 1, 2, "w6"), (2, 2, 1, "w7"), (2, 2, 2, "w8"),
                          (1, 1, 1, "w1"), (1, 1, 2, "w2"), (1, 2, 1, "w3"), (1, 2, 2, "w4")]:
        value, autograd = got[f"w^{k}_{{{j},{i}}} (w_{name[1]})"]
        # He rounds some intermediate values to 9 digits; one unit in his last digit, as the textbook test allows.
        assert close_to_printed(value, p[name], units=1.0), f"new {name} = {value!r}, Mazur's {p[name]}"
        assert autograd == value


def test_mazur_trace_states_its_conventions_once(capsys):
    _, out, _ = run(["--example", "mazur"], capsys)
    assert out.count("Sign convention, said once") == 1
    assert "-∂E / ∂net_j" in out and "`deltas`" in out
    assert "SquaredError(reduction='sum', half=True)" in out and "twice these" in out
    assert "--example mazur` picks it" in out
    assert "they agree." in out


def test_trace_shows_the_slides_factors(capsys):
    """Output delta = 2(y - x) f'(net) (the lecture's e^2 under reduction sum), hidden delta = f'(net) Σ δ w."""
    code, out, _ = run(["--sizes", "2", "2", "1", "--reduction", "sum", "--seed", "3"], capsys)
    assert code == 0 and "This is the lecture's e^2" in out
    got = parse_trace(out)
    e, fp, d = got["2(y_1 - x^2_1)"][0], got["f'(net^2_1)"][0], got["δ^2_1"][0]
    assert d == pytest.approx(e * fp, abs=2e-9)  # the text prints 9 decimals
    for j in (1, 2):
        s, fpj, dj = got[f"Σ_c δ^2_c w^2_{{c,{j}}}"][0], got[f"f'(net^1_{j})"][0], got[f"δ^1_{j}"][0]
        assert dj == pytest.approx(fpj * s, abs=2e-9)
    assert "δ^2_1 w^2_{1,1} = " in out  # the sum written out for a layer this small
    x1 = got["x^1_1"][0]
    assert got["Δw^2_{1,1}"][0] == pytest.approx(0.5 * d * x1, abs=2e-9)  # Δw = η δ x


def test_trace_writes_sums_out_only_for_small_layers(capsys):
    code, out, _ = run(["--sizes", "2", "6", "6", "1", "--activation", "tanh"], capsys)
    assert code == 0
    assert re.search(r"Σ_c δ\^2_c w\^2_\{c,1\} = -?[0-9.e-]+ ", out)  # over 6 neurons: only the value
    assert "net^2_1 = Σ_i w^2_{1,i} x^1_i + b^2_1 = " in out


def test_trace_runs_the_library_code(monkeypatch, capsys):
    """Break the library's sigmoid derivative: the manual column must change and disagree with autograd."""
    from manual_backprop.activations import Sigmoid

    monkeypatch.setattr(Sigmoid, "derivative", lambda self, x: x * (1.0 - x) * 1.01)
    code, out, _ = run(["--example", "mazur"], capsys)
    assert code == 1 and "they DISAGREE" in out


@pytest.mark.parametrize("argv", [
    ["--sizes", "2", "3", "2", "--activation", "relu", "--output-activation", "softmax"],
    ["--sizes", "3", "2", "2", "--activation", "leaky_relu", "--loss", "bce", "--no-bias", "--dtype", "float32"],
    ["--sizes", "2", "2", "3", "--activation", "identity", "--output-activation", "softmax", "--loss",
     "squared_error"],
    ["--sizes", "3", "3", "3", "--activation", "tanh", "--output-activation", "identity", "--reduction",
     "elementwise_mean", "--half"],
    ["--sizes", "2", "1", "--output-activation", "tanh", "--sample", "3", "--lr", "0.1"],
])
def test_trace_agrees_with_autograd_for_every_kind_of_network(argv, capsys):
    code, out, _ = run(argv, capsys)
    assert code == 0 and "they agree." in out
    for lhs, (value, autograd) in parse_trace(out).items():
        if autograd is not None:
            assert value == pytest.approx(autograd, rel=1e-5, abs=1e-7), lhs


def test_trace_follows_the_sample_asked_for(capsys):
    net_flags = ["--sizes", "2", "2", "1", "--seed", "4"]
    run([*net_flags, "--sample", "2"], capsys)
    main(["trace", *net_flags, "--sample", "2"])
    got = parse_trace(capsys.readouterr().out)
    args = build_parser().parse_args(["check", *net_flags, "--output-activation", "sigmoid"])  # trace's output
    from commands.cli import network_from_args

    net, loss_fn = network_from_args(args)
    x, _ = random_problem(net, loss_fn, 4, seed=4)
    assert got["x^0_1"][0] == pytest.approx(x[2, 0].item(), rel=1e-8)

    code, out, _ = run([*net_flags, "--input", "0.5", "-1", "--target", "0.25"], capsys)
    got = parse_trace(out)
    assert code == 0 and got["x^0_1"][0] == 0.5 and got["x^0_2"][0] == -1 and got["y_1"][0] == 0.25


def test_trace_formats_for_slides_and_handouts():
    ex = mazur_example()
    t = trace_update(ex.net, ex.x, ex.y, ex.loss_fn, ex.lr, title=ex.title, notes=ex.notes,
                     weight_names=ex.weight_names)
    md, tex, text = render(t, "markdown"), render(t, "latex"), render(t, "text")
    assert "| quantity | written out | manual | autograd |" in md
    assert "| $\\delta^{2}_{1}$ | $(-0.74136507) \\cdot 0.186815602$ | -0.138498562 | -0.138498562 |" in md
    assert tex.count("\\begin{longtable}") == tex.count("\\end{longtable}") == 5  # forward, 2 backward, 2 updates
    for line in tex.splitlines():
        if not line.startswith("%"):
            assert line.count("{") == line.count("}"), line
            assert line.replace("\\$", "").count("$") % 2 == 0, line
    assert "\\texttt{forward\\_phase}" in tex and "$-0.138498562$" in tex
    assert "$" not in text and "\\" not in text
    with pytest.raises(ValueError, match="format must be one of"):
        render(t, "html")


def test_plain_turns_the_tex_into_readable_text():
    assert plain("\\delta^{2}_{1} = \\tfrac{1}{2} \\cdot 2(y_{1} - x^{2}_{1})") == "δ^2_1 = 1/2 · 2(y_1 - x^2_1)"
    assert plain("\\Delta w^{k}_{j,i} = \\eta\\,\\delta^{k}_{j}\\,x^{k-1}_{i}") == "Δw^k_{j,i} = η δ^k_j x^{k-1}_i"
    assert plain("(W^{k-1\\to k})_{j,i}") == "(W^{k-1→k})_{j,i}"


def test_check_and_trace_share_the_network_flags():
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    options = {name: {s for a in p._actions for s in a.option_strings} for name, p in subs.items()}
    shared = {"--sizes", "--activation", "--output-activation", "--loss", "--reduction", "--half", "--no-bias",
              "--init", "--bias-init", "--batch", "--dtype", "--device", "--seed"}
    assert shared <= options["check"] and shared <= options["trace"]
    assert {"--example", "--sample", "--lr", "--format", "--input", "--target"} <= options["trace"] - options["check"]


@pytest.mark.parametrize("argv,message", [
    (["--example", "mazur", "--sizes", "3", "3"], "--example mazur fixes the network"),
    (["--example", "mazur", "--sample", "1"], "--sample cannot be given with it"),
    (["--sample", "4"], "--sample must be in [0, 3] for --batch 4"),
    (["--input", "1"], "--input must give n_0 = 2 numbers"),
    (["--input", "1", "2"], "--input needs --target"),
    (["--target", "1"], "--target needs --input"),
    (["--input", "1", "2", "--target", "1", "2"], "--target must give n_L = 1 numbers"),
    (["--sizes", "50", "50", "10"], "trace writes out every weight"),
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--loss", "cross_entropy"], "needs output_activation='softmax'"),
])
def test_trace_refuses_bad_flags_in_one_line(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_trace_float32_mazur_is_close_to_his_numbers(capsys):
    code, out, _ = run(["--example", "mazur", "--dtype", "float32"], capsys)
    assert code == 0
    assert parse_trace(out)["E"][0] == pytest.approx(0.298371109, rel=1e-6)


def test_mazur_example_is_his_network():
    ex = mazur_example()
    assert ex.net.sizes == [2, 2, 2] and ex.lr == 0.5
    assert ex.loss_fn.reduction == "sum" and ex.loss_fn.half
    assert torch.equal(ex.net.weights[1], torch.tensor([[0.40, 0.45], [0.50, 0.55]], dtype=torch.float64))
