"""AdamW (keras/src/optimizers/adamw.py): Adam with decoupled weight decay, 0.004 by default."""

from __future__ import annotations

from cdnn.optimizers.adam import Adam


class AdamW(Adam):
    """Adam whose ``weight_decay`` (required, default 0.004) shrinks the weights before each update
    (named ``adam_w`` by default, as Keras 3 names it)."""

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        name: str | None = None,
        **kwargs,
    ) -> None:
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(
            learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=weight_decay,
            name=name or "adam_w",
            **kwargs,
        )
