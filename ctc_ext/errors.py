"""The exception ctc_ext raises for bad arguments."""


class CTCArgumentError(ValueError, RuntimeError):
    """A bad argument to a ctc_ext function: a shape, dtype, length, label or option.

    Both a ``ValueError`` (what ctc_ext raised before) and a ``RuntimeError`` (what
    :func:`torch.nn.functional.ctc_loss` raises for bad arguments), so code written to catch
    either keeps working.  Checks made inside the C++ operators (label values, lengths against
    ``T``, ...) raise torch's ``RuntimeError``, like the built-in's.
    """
