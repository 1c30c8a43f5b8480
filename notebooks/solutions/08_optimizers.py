"""Solutions to the exercises of 08_optimizers.ipynb."""
import numpy as np


def adamw_step(param, grad, m, v, t, lr, betas, eps, weight_decay):
    beta1, beta2 = betas
    param = param * (1 - lr * weight_decay)            # decoupled weight decay
    m = beta1 * m + (1 - beta1) * grad                 # running mean of the gradient
    v = beta2 * v + (1 - beta2) * grad ** 2            # running mean of its square
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)  # undo the bias toward the zero start
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


SOLUTIONS = {"check_adamw_step": adamw_step}
