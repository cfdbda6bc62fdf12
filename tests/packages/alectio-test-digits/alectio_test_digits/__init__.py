"""Logistic regression on scikit-learn's bundled digits, as an alectio model.

Written the seed SDK's way on purpose: plain functions, no decorator,
``train`` and ``test`` reading everything from ``payload``. The checkpoint
is an ``.npz`` of the weights (never a pickle).
"""

import numpy as np

_DATA = {}


def _data():
    if not _DATA:
        from sklearn.datasets import load_digits  # on use: listing plugins stays cheap

        X, y = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(y))
        X, y = X[order] / 16.0, y[order]
        _DATA.update(pool_X=X[:1400], pool_y=y[:1400], test_X=X[1400:], test_y=y[1400:])
    return _DATA


def _load(path):
    from sklearn.linear_model import LogisticRegression

    with np.load(path, allow_pickle=False) as f:
        model = LogisticRegression()
        model.classes_, model.coef_, model.intercept_ = f["classes"], f["coef"], f["intercept"]
    return model


def assign_index(payload):
    return {i: f"digit_{i}.png" for i in range(len(_data()["pool_y"]))}


def model_info(config):
    return {"task": "classification", "labels": [str(d) for d in range(10)]}


def train(payload):
    from sklearn.linear_model import LogisticRegression

    data, labeled = _data(), payload["labeled"]
    model = LogisticRegression(max_iter=int(payload["config"].get("max_iter", 200)))
    y = data["pool_y"][labeled]
    if payload["resume_from"]:
        previous = _load(payload["resume_from"])
        if np.array_equal(previous.classes_, np.unique(y)):  # warm start needs the same classes
            model.set_params(warm_start=True)
            model.coef_, model.intercept_ = previous.coef_, previous.intercept_
    model.fit(data["pool_X"][labeled], y)
    with open(payload["ckpt_file"], "wb") as f:  # np.savez adds .npz to bare paths
        np.savez(f, classes=model.classes_, coef=model.coef_, intercept=model.intercept_)
    return {"labels": y.tolist()}


def test(payload):
    data = _data()
    model = _load(payload["ckpt_file"])
    return {"predictions": model.predict(data["test_X"]).tolist(), "labels": data["test_y"].tolist()}


def infer(unlabeled, ckpt_file, writer):
    data = _data()
    model = _load(ckpt_file)
    idx = np.asarray(unlabeled)
    scores = model.decision_function(data["pool_X"][idx])
    # One column per digit, even when a digit was never labeled yet.
    logits = np.full((idx.size, 10), scores.min() - 10.0)
    logits[:, model.classes_] = scores
    # The embedding: the features the decision function reads (64 pixels).
    writer.extend(idx, logits, embeddings=data["pool_X"][idx])
