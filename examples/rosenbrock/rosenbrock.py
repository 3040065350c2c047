#!/usr/bin/env python3
"""Auptimizer job: the Rosenbrock function of (x, y); lower is better.

Called as `rosenbrock.py <config.json>`; prints intermediate results as it "trains" and the
final value last, each as `#Auptimizer:<value>`. Needs nothing but Python.
"""
import json
import sys
import time


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    x, y = float(config["x"]), float(config["y"])
    value = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    steps = int(config.get("steps", 5))
    delay = float(config.get("delay", 0.2))
    for step in range(1, steps):
        time.sleep(delay)
        # a noisy, improving estimate, as a training curve would be
        print(f"#Auptimizer:{value * (1 + 1.0 / step):.6f}", flush=True)
    time.sleep(delay)
    print(f"rosenbrock({x:.4f}, {y:.4f}) = {value:.6f}")
    print(f"#Auptimizer:{value:.6f}", flush=True)


if __name__ == "__main__":
    main()
