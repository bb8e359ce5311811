"""A Trace (trace.py) written out in the lecture's notation: plain text, Markdown (tables with $TeX$) or LaTeX.

The document is built once, as title, headings, paragraphs and blocks of lines; each line is one quantity
``lhs = written-out formula = manual value`` with autograd's value beside it. Formulas are written in TeX; the text
format turns them into plain Unicode (``\\delta^{2}_{1}`` -> ``δ^2_1``), Markdown keeps them between dollars and
LaTeX sets them in a longtable. Sums are written out term by term for layers of at most ``WRITE_OUT_MAX`` neurons.

Notation: layers are numbered from 0 (the input) to L, neurons from 1; w^k_{j,i} is the weight from neuron i of
layer k-1 into neuron j of layer k, the code's ``weights[k-1][j-1, i-1]``. Every delta written is the lecture's,
minus the code's ``deltas``.
"""

from __future__ import annotations

import re
import textwrap
from fractions import Fraction
from typing import NamedTuple, Optional

from manual_backprop.losses import BinaryCrossEntropy, CrossEntropy, SquaredError

__all__ = ["FORMATS", "render", "plain"]

FORMATS = ("text", "markdown", "latex")
WRITE_OUT_MAX = 3  # write a sum's terms out, in numbers, when it has at most this many
SYMBOLS_MAX = 2  # ... and in symbols too when it has at most this many


class Line(NamedTuple):
    lhs: str  # TeX
    formula: Optional[str]  # TeX, or None where the value is given, not computed
    value: float
    autograd: Optional[float] = None


def _n(v) -> str:
    """Nine decimals, as hand-worked examples print them (Mazur's 0.298371109); tiny or huge values in 9 digits."""
    v = float(v)
    if 1e-4 <= abs(v) < 1e5:
        return f"{v:.9f}".rstrip("0").rstrip(".")
    return f"{v:.9g}"


def _p(v) -> str:
    """A number as a factor of a product: negatives in parentheses."""
    s = _n(v)
    return f"({s})" if s.startswith("-") else s


def _frac(c: float) -> str:
    f = Fraction(c).limit_denominator(10_000)
    return "" if f == 1 else (f"\\tfrac{{{f.numerator}}}{{{f.denominator}}}" if f.denominator != 1 else str(f))


def X(k, j): return f"x^{{{k}}}_{{{j}}}"  # noqa: E704 (notation, one line each)
def NET(k, j): return f"\\mathrm{{net}}^{{{k}}}_{{{j}}}"  # noqa: E704
def D(k, j): return f"\\delta^{{{k}}}_{{{j}}}"  # noqa: E704
def W(k, j, i): return f"w^{{{k}}}_{{{j},{i}}}"  # noqa: E704
def B(k, j): return f"b^{{{k}}}_{{{j}}}"  # noqa: E704
def Y(j): return f"y_{{{j}}}"  # noqa: E704
def FP(k, j): return f"f'({NET(k, j)})"  # noqa: E704


def _f_of(f, arg: str) -> str:
    """TeX for f(arg) with the activation's own formula."""
    name, factor = f.name, f"({arg})" if arg.startswith("-") else arg
    if name == "sigmoid":
        return f"\\sigma({arg})"
    if name == "tanh":
        return f"\\tanh({arg})"
    if name == "relu":
        return f"\\max(0, {arg})"
    if name == "leaky_relu":
        return f"\\max({arg}, {f.negative_slope:g} \\cdot {factor})"
    if name == "identity":
        return arg
    return f"\\mathrm{{{name}}}({arg})"


def _fprime_line(layer, j: int) -> Line:
    """f'(net^k_j) read off x^k_j, with the formula in symbols and numbers (none for a constant f')."""
    sym, num = _fprime_of(layer.f, X(layer.k, j + 1)), _fprime_of(layer.f, _p(layer.x[j]))
    return Line(FP(layer.k, j + 1), None if sym == num else f"{sym} = {num}", layer.fprime[j],
                layer.autograd["fprime"][j])


def _fprime_of(f, x: str) -> str:
    """TeX for f'(net) read off the activity x, as activations.py computes it."""
    return {"sigmoid": f"{x}\\,(1 - {x})", "tanh": f"(1 - {x})(1 + {x})", "relu": f"[{x} > 0]",
            "leaky_relu": f"1 \\text{{ if }} {x} > 0 \\text{{ else }} {getattr(f, 'negative_slope', 0):g}",
            "identity": "1"}.get(f.name, f"f'({x})")


def _loss_note(loss_fn, n: int, L: int) -> str:
    """The loss of one sample, its code name, and how it relates to the lecture's e^2."""
    code = f"`{loss_fn!r}`"
    if isinstance(loss_fn, SquaredError):
        c = loss_fn.scale(1, n)
        note = (f"Loss: $E = {_frac(c)}\\sum_j (y_j - {X(L, 'j')})^2$ ({code}; with one sample the reductions "
                "`sum` and `mean` agree). ")
        if c == 1:
            return note + ("This is the lecture's $e^2$, whose output delta is the slide's "
                           "$2(y_j - x_j)\\,f'(\\mathrm{net}_j)$.")
        times = "twice these" if c == 0.5 else f"{round(1 / c)} times these"
        return note + (f"The lecture's $e^2$ has no factor ${_frac(c)}$: its $\\delta$ and $\\Delta w$ are {times} "
                       "at the same $\\eta$.")
    if isinstance(loss_fn, CrossEntropy):
        return (f"Loss: $E = -\\sum_j y_j \\log {X(L, 'j')}$ on a softmax output ({code}); $f'$ cancels against the "
                "loss, so the output delta is $\\delta_j = y_j - x_j$.")
    if isinstance(loss_fn, BinaryCrossEntropy):
        return (f"Loss: $E = -\\sum_j [y_j \\log {X(L, 'j')} + (1 - y_j) \\log(1 - {X(L, 'j')})]$ on sigmoid outputs "
                f"({code}); $f'$ cancels against the loss, so the output delta is $\\delta_j = y_j - x_j$.")
    return f"Loss: {code}."


def _document(t) -> list:
    net, L, lr = t.net, t.net.num_layers, t.lr
    hidden = ", ".join(layer.f.spec() for layer in t.layers[:-1]) or "no hidden layer"
    blocks = [("title", t.title), ("para", (
        f"Network {'-'.join(map(str, net.sizes))}: hidden {hidden}; output {t.layers[-1].f.spec()}"
        f"{'' if net.bias else '; no biases'}; one sample; $\\eta = {lr:g}$; {str(net.dtype).replace('torch.', '')}."))]
    blocks.append(("para", _loss_note(t.loss_fn, net.sizes[-1], L)))
    blocks.append(("para", (
        "Sign convention, said once: the lecture's $\\delta_j = -\\partial E / \\partial \\mathrm{net}_j$, so "
        "$\\Delta w_{j,i} = +\\eta\\,\\delta_j\\,x_i$. The code's `deltas` (and autograd's `z.grad`) are "
        "$+\\partial E / \\partial \\mathrm{net}_j$, and its update "
        "$w \\leftarrow w - \\eta\\,\\partial E / \\partial w$ is the same step. Every $\\delta$ below is "
        "the lecture's.")))
    blocks.append(("para", (
        f"Notation: layers are numbered from 0 (the input) to {L}, neurons from 1. ${X('k', 'j')}$ is the activity "
        f"of neuron j of layer k (`activations[k][0, j-1]`), ${NET('k', 'j')}$ its weighted input, "
        f"${W('k', 'j', 'i')}$ the weight from neuron i of layer k-1 into neuron j of layer k, "
        "$(W^{k-1\\to k})_{j,i}$ (`weights[k-1][j-1, i-1]`), and $b^{k}_{j}$ its bias (`biases[k-1][j-1]`).")))
    blocks.append(("para", (
        "The manual column comes from network.py's `forward_phase`, `net_input`, `output_delta`, `hidden_delta`, "
        "`weight_gradient`, `bias_gradient` and `update`, the functions that train; the autograd column from the "
        "torch.nn twin, `torch.autograd.grad` and one `torch.optim.SGD` step.")))
    blocks += [("para", note) for note in t.notes]
    blocks += _forward(t) + _backward(t) + _updates(t)
    err, tol = t.max_error(), t.tolerance
    blocks.append(("para", (
        f"Manual vs autograd: the largest norm-relative difference over every number above is {err:.1e} "
        f"(tolerance {tol:.0e} in {str(net.dtype).replace('torch.', '')}): "
        + ("they agree." if err <= tol else "they DISAGREE."))))
    return blocks


def _forward(t) -> list:
    lines = [Line(X(0, i + 1), None, v) for i, v in enumerate(t.x0.tolist())]
    prev = t.x0
    for layer in t.layers:
        k, n_in = layer.k, layer.weight.shape[1]
        for j in range(layer.net.numel()):
            w = layer.weight[j].tolist()
            b = None if layer.bias is None else float(layer.bias[j])
            if n_in <= WRITE_OUT_MAX:
                sym = " + ".join(f"{W(k, j + 1, i + 1)}\\,{X(k - 1, i + 1)}" for i in range(n_in))
                num = " + ".join(f"{_p(w[i])} \\cdot {_p(prev[i])}" for i in range(n_in))
                formula = (sym + (f" + {B(k, j + 1)}" if b is not None else "") + " = " if n_in <= SYMBOLS_MAX
                           else "") + num + (f" + {_p(b)}" if b is not None else "")
            else:
                formula = f"\\sum_i {W(k, j + 1, 'i')}\\,{X(k - 1, 'i')}" + (
                    f" + {B(k, j + 1)}" if b is not None else "")
            lines.append(Line(NET(k, j + 1), formula, layer.net[j], layer.autograd["net"][j]))
        for j in range(layer.x.numel()):
            formula = f"{_f_of(layer.f, NET(k, j + 1))} = {_f_of(layer.f, _n(layer.net[j]))}"
            if layer.f.name == "identity":
                formula = NET(k, j + 1)
            elif layer.f.name == "softmax":
                formula = f"e^{{{NET(k, j + 1)}}} / \\sum_c e^{{{NET(k, 'c')}}}"
            lines.append(Line(X(k, j + 1), formula, layer.x[j], layer.autograd["x"][j]))
        prev = layer.x
    L, out = len(t.layers), t.layers[-1].x
    lines += [Line(Y(j + 1), None, v) for j, v in enumerate(t.y.tolist())]
    lines.append(Line("E", _loss_formula(t.loss_fn, t.y.tolist(), out.tolist(), L), t.loss, t.loss_autograd))
    return [("heading", f"Forward phase: ${X('k', 'j')} = f({NET('k', 'j')})$, "
                        f"${NET('k', 'j')} = \\sum_i {W('k', 'j', 'i')}\\,{X('k-1', 'i')} + b^{{k}}_{{j}}$"),
            ("lines", lines)]


def _loss_formula(loss_fn, y: list, x: list, L: int) -> str:
    n, written = len(y), len(y) <= WRITE_OUT_MAX
    if isinstance(loss_fn, SquaredError):
        c = _frac(loss_fn.scale(1, n))
        sym = f"{c}\\sum_j (y_j - {X(L, 'j')})^2"
        if not written:
            return sym
        terms = " + ".join(f"({_n(y[j])} - {_p(x[j])})^2" for j in range(n))
        return f"{sym} = {c}\\left({terms}\\right)" if c else f"{sym} = {terms}"
    if isinstance(loss_fn, CrossEntropy):
        sym = f"-\\sum_j y_j \\log {X(L, 'j')}"
        if not written:
            return sym
        return sym + " = -(" + " + ".join(f"{_n(y[j])} \\log {_n(x[j])}" for j in range(n)) + ")"
    return f"-\\sum_j [y_j \\log {X(L, 'j')} + (1 - y_j) \\log(1 - {X(L, 'j')})]"


def _backward(t) -> list:
    out, L, loss_fn = t.layers[-1], len(t.layers), t.loss_fn
    blocks = [("heading", "Backward phase: the error terms $\\delta$, from the output layer back")]
    lines = []
    if isinstance(loss_fn, SquaredError):
        c = _frac(loss_fn.scale(1, out.x.numel()))
        e = f"{c} \\cdot 2(y_j - {X(L, 'j')})" if c else f"2(y_j - {X(L, 'j')})"
        if out.fprime is not None:
            blocks.append(("para", f"Output layer {L}: ${D(L, 'j')} = {e}\\; {FP(L, 'j')}$, the loss's factor "
                                   "times $f'$."))
        else:
            blocks.append(("para", f"Output layer {L} (softmax, whose $f'$ is a Jacobian): $e_j = {e}$ and "
                                   f"${D(L, 'j')} = {X(L, 'j')}\\,(e_j - \\sum_c e_c\\,{X(L, 'c')})$."))
        for j in range(out.x.numel()):
            yj, xj = _n(t.y[j]), _p(out.x[j])
            num = f"{c} \\cdot 2({yj} - {xj})" if c else f"2({yj} - {xj})"
            e_sym = e.replace("y_j", Y(j + 1)).replace(X(L, "j"), X(L, j + 1))
            lines.append(Line(e_sym if out.fprime is not None else f"e_{{{j + 1}}}", num, -out.grad_x[j],
                              -out.autograd["grad_x"][j]))
            if out.fprime is not None:
                lines.append(_fprime_line(out, j))
                formula = f"{_p(-out.grad_x[j])} \\cdot {_p(out.fprime[j])}"
            else:
                formula = f"{X(L, j + 1)}\\,(e_{{{j + 1}}} - \\sum_c e_c\\,{X(L, 'c')})"
            lines.append(Line(D(L, j + 1), formula, -out.delta[j], -out.autograd["delta"][j]))
    else:
        c = _frac(loss_fn.scale(1, out.x.numel()))
        diff = f"y_j - {X(L, 'j')}"
        blocks.append(("para", f"Output layer {L}: ${D(L, 'j')} = {f'{c}({diff})' if c else diff}$, "
                               "$f'$ cancelled by the loss."))
        for j in range(out.x.numel()):
            diff = f"{_n(t.y[j])} - {_p(out.x[j])}"
            lines.append(Line(D(L, j + 1), f"{c}({diff})" if c else diff, -out.delta[j],
                              -out.autograd["delta"][j]))
    blocks.append(("lines", lines))
    for layer, above in zip(reversed(t.layers[:-1]), reversed(t.layers[1:])):
        k, n_above = layer.k, above.delta.numel()
        rule = f"{D(k, 'j')} = {FP(k, 'j')} \\sum_c {D(k + 1, 'c')}\\,{W(k + 1, 'c', 'j')}"
        blocks.append(("para", f"Layer {k}: ${rule}$, "
                               f"the sum over the {n_above} neuron{'s' if n_above > 1 else ''} of layer {k + 1}."))
        lines = []
        for j in range(layer.x.numel()):
            s = f"\\sum_c {D(k + 1, 'c')}\\,{W(k + 1, 'c', j + 1)}"
            formula = None
            if n_above <= WRITE_OUT_MAX:
                formula = " + ".join(f"{_p(-above.delta[c])} \\cdot {_p(above.weight[c, j])}" for c in range(n_above))
                if n_above <= SYMBOLS_MAX:
                    formula = " + ".join(f"{D(k + 1, c + 1)}\\,{W(k + 1, c + 1, j + 1)}"
                                         for c in range(n_above)) + " = " + formula
            lines.append(Line(s, formula, -layer.grad_x[j], -layer.autograd["grad_x"][j]))
            if layer.fprime is not None:
                lines.append(_fprime_line(layer, j))
            product = f"{_p(layer.fprime[j])} \\cdot {_p(-layer.grad_x[j])}"
            lines.append(Line(D(k, j + 1), f"{FP(k, j + 1)}\\,{s} = {product}",
                              -layer.delta[j], -layer.autograd["delta"][j]))
        blocks.append(("lines", lines))
    return blocks


def _updates(t) -> list:
    lr = f"{t.lr:g}"
    blocks = [("heading", f"Weight changes $\\Delta {W('k', 'j', 'i')} = \\eta\\,{D('k', 'j')}\\,{X('k-1', 'i')}$ "
                          "and new weights $w \\leftarrow w + \\Delta w$"),
              ("para", "The gradient the code returns (`weight_gradient`) is "
                       "$\\partial E / \\partial w = -\\delta\\,x$, so "
                       "$\\Delta w = -\\eta\\,\\partial E / \\partial w$. "
                       "A bias is a weight whose input activity is 1: $\\Delta b^{k}_{j} = \\eta\\,\\delta^{k}_{j}$. "
                       "Every $\\Delta w$ uses the $\\delta$ "
                       "computed with the old weights; `update` applies them all at once.")]
    prev_x = [t.x0] + [layer.x for layer in t.layers]
    for layer in reversed(t.layers):
        k, lines = layer.k, []
        ag = layer.autograd
        for j in range(layer.weight.shape[0]):
            d = -float(layer.delta[j])
            for i in range(layer.weight.shape[1]):
                name = t.weight_names.get((k, j + 1, i + 1))
                lhs = W(k, j + 1, i + 1) + (f"\\;({name})" if name else "")
                xi = float(prev_x[k - 1][i])
                lines.append(Line(f"\\partial E / \\partial {lhs}", f"-{D(k, j + 1)}\\,{X(k - 1, i + 1)} = "
                                  f"-({_n(d)}) \\cdot {_p(xi)}", layer.grad_w[j, i], ag["grad_w"][j, i]))
                rule = f"\\eta\\,{D(k, j + 1)}\\,{X(k - 1, i + 1)}"
                lines.append(Line(f"\\Delta {lhs}", f"{rule} = {lr} \\cdot {_p(d)} \\cdot {_p(xi)}",
                                  -t.lr * layer.grad_w[j, i], -t.lr * ag["grad_w"][j, i]))
                lines.append(Line(f"{lhs} \\leftarrow", f"{_n(layer.weight[j, i])} + {_p(-t.lr * layer.grad_w[j, i])}",
                                  layer.new_weight[j, i], ag["new_weight"][j, i]))
            if layer.bias is not None:
                lines.append(Line(f"\\partial E / \\partial {B(k, j + 1)}", f"-{D(k, j + 1)} = -({_n(d)})",
                                  layer.grad_b[j], ag["grad_b"][j]))
                lines.append(Line(f"\\Delta {B(k, j + 1)}", f"\\eta\\,{D(k, j + 1)} = {lr} \\cdot {_p(d)}",
                                  -t.lr * layer.grad_b[j], -t.lr * ag["grad_b"][j]))
                lines.append(Line(f"{B(k, j + 1)} \\leftarrow", f"{_n(layer.bias[j])} + {_p(-t.lr * layer.grad_b[j])}",
                                  layer.new_bias[j], ag["new_bias"][j]))
        blocks += [("para", f"Layer {k} ($W^{{{k - 1}\\to {k}}}$, the code's `weights[{k - 1}]`):"), ("lines", lines)]
    return blocks


# -------------------------------------------------------------------------------------------------- the formats
_SYMBOLS = {"delta": "δ", "Delta": "Δ", "eta": "η", "sigma": "σ", "cdot": "·", "to": "→", "leftarrow": "←",
            "sum": "Σ", "partial": "∂", "tanh": "tanh", "max": "max", "log": "log", "left": "", "right": "",
            "quad": "  "}
_EAT_SPACE = ("Delta", "partial", "to")  # prefixes written against what follows: Δw, ∂E, →k


def plain(tex: str) -> str:
    """TeX of this module's formulas as plain Unicode: \\delta^{2}_{1} -> δ^2_1, \\tfrac{1}{2} -> 1/2."""
    s = re.sub(r"\\(?:mathrm|text)\{([^{}]*)\}", r"\1", tex)
    s = re.sub(r"\\tfrac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2 ", s)

    def symbol(m):
        name = m.group(1)
        if name not in _SYMBOLS:
            return m.group(0)
        return _SYMBOLS[name] + ("" if name in _EAT_SPACE else m.group(2))

    s = re.sub(r"\\([A-Za-z]+)( ?)", symbol, s)
    s = s.replace("\\,", " ").replace("\\;", " ").replace("\\ ", " ")
    s = re.sub(r"\^\{([\w']+)\}", r"^\1", s)
    s = re.sub(r"_\{(\w+)\}", r"_\1", s)
    return re.sub(r"(?<=\S)  +", " ", s).replace("( ", "(").rstrip()


def _prose(text: str, fmt: str) -> str:
    parts = text.split("$")
    if fmt == "text":
        return "".join(plain(p) if i % 2 else p for i, p in enumerate(parts))
    if fmt == "markdown":
        return text
    out = []
    for i, p in enumerate(parts):
        if i % 2:
            out.append(f"${p}$")
            continue
        for j, piece in enumerate(p.split("`")):
            esc = re.sub(r"([&%#_{}])", r"\\\1", piece)
            out.append(f"\\texttt{{{esc}}}" if j % 2 else esc)
    return "".join(out)


def _line_cells(line: Line, fmt: str) -> tuple:
    lhs, formula = line.lhs, line.formula
    ag = "" if line.autograd is None else _n(line.autograd)
    if fmt == "text":
        left = plain(lhs) + (" " if lhs.endswith("\\leftarrow") else " = ") + (
            f"{plain(formula)} = " if formula else "") + _n(line.value)
        return left, ag
    if fmt == "markdown":
        return f"${lhs}$", f"${formula}$" if formula else "", _n(line.value), ag
    return f"${lhs}$", f"${formula}$" if formula else "", f"${_n(line.value)}$", f"${ag}$" if ag else ""


def render(trace, fmt: str = "text") -> str:
    """The trace as one string in ``fmt``: "text", "markdown" or "latex" (a fragment for \\input)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, but got {fmt!r}")
    out = []
    if fmt == "latex":
        out.append("% manual-backprop trace --format latex: \\input this into a document with "
                   "\\usepackage{amsmath,longtable}")
    for kind, content in _document(trace):
        if kind == "title":
            out += {"text": [content, "=" * len(content)], "markdown": [f"## {content}"],
                    "latex": [f"\\section*{{{_prose(content, fmt)}}}"]}[fmt]
        elif kind == "heading":
            h = _prose(content, fmt)
            out += {"text": ["", h, "-" * len(h)], "markdown": ["", f"### {h}"],
                    "latex": ["", f"\\subsection*{{{h}}}"]}[fmt]
        elif kind == "para":
            p = _prose(content, fmt)
            if fmt == "text":
                out += ([] if out[-1].startswith("---") else [""]) + textwrap.wrap(
                    p, 110, break_long_words=False, break_on_hyphens=False)
            else:
                out += ["", p]
        else:
            rows = [_line_cells(line, fmt) for line in content]
            if fmt == "text":
                width = max(len(r[0]) for r in rows)
                out.append(f"  {'':<{width}}   autograd")
                out += [f"  {left:<{width}}   {ag}".rstrip() for left, ag in rows]
            elif fmt == "markdown":
                out += ["", "| quantity | written out | manual | autograd |", "|---|---|--:|--:|"]
                out += ["| " + " | ".join(r) + " |" for r in rows]
            else:
                out += ["", "\\begin{longtable}{llrr}", "quantity & written out & manual & autograd \\\\ \\hline"]
                out += [" & ".join(r) + " \\\\" for r in rows]
                out.append("\\end{longtable}")
    return "\n".join(out) + "\n"
