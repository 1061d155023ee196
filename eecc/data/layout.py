"""What to do about data whose sample shape is not the model's: transpose, reshape or --input-shape."""

from __future__ import annotations

import itertools

import numpy as np


def layout_advice(got: tuple[int, ...], want: tuple[int, ...], bundle: bool = False) -> str:
    """What to do about a sample-shape mismatch: a layout change is a transpose of the data, never
    --input-shape (that only fills in dims the model leaves symbolic), and never a reshape, which keeps the
    values' order and so scrambles channels-last data into noise the model scores at chance (nu12 F3: a
    [128, 3] signal for a [3, 128] model, "fixed" by the reshape once advised here, went from 100 % to 31 %).
    `bundle`: the data are for `eecc run`, whose stages were built for `want`: --input-shape is compile's option
    (nu14 F7: run was told to take it and refused it as unrecognised)."""
    n = len(got)
    perms = [p for p in itertools.permutations(range(n)) if tuple(got[i] for i in p) == want] \
        if sorted(got) == sorted(want) and 1 < n <= 6 else []
    if perms:  # equal dims (H = W) make several fit: the one that moves the fewest axes past each other
        perm = min(perms, key=lambda p: sum(p[i] > p[j] for i in range(n) for j in range(i + 1, n)))
        # ONNX models take channels first: for 2-D samples, whose two names are one permutation, channels-last wins
        names = {(*range(1, n), 0): "channels-first", (n - 1, *range(n - 1)): "channels-last"}
        layout = names.get(perm, "in another axis order")
        if layout != "in another axis order" and n in (2, 3):
            layout += " (" + {("channels-last", 2): "NLC", ("channels-last", 3): "NHWC",
                              ("channels-first", 2): "NCL", ("channels-first", 3): "NCHW"}[layout, n] + ")"
        return f"the data are {layout}: store x.transpose(0, {', '.join(str(i + 1) for i in perm)})"
    # a wrong --input-shape on a model with symbolic dims shows here too: name the one that fits (nu12 F5)
    symbolic = f"if the model's input dims are symbolic, --input-shape {','.join(map(str, got))} fits this data"
    if bundle:
        symbolic = (f"the bundle's stages are built for {list(want)}: if the model's input dims are symbolic, "
                    f"compile it again with --input-shape {','.join(map(str, got))} for this data")
    if int(np.prod(got)) == int(np.prod(want)):
        return (f"if each sample is stored flat in the model's own axis order, reshape it: "
                f"x.reshape(len(x), {', '.join(map(str, want))}); if its axes are in another order, transpose them; "
                + symbolic)
    return f"give data of the shape the model was trained on (or a model exported for this shape); {symbolic}"
