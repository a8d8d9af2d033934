"""Session-scoped random-weight stand-ins for Google's Inception graph and PCA (see
``factories.py``): ``inception_pb``, ``inception_tgz``, ``inception_pth``, ``pca_dir``,
``pca_tgz``, and ``inception_model`` (the graph loaded once)."""

from __future__ import annotations

import pytest

from tests.extract import factories


@pytest.fixture(scope="session")
def inception_pb(tmp_path_factory):
    return factories.write_inception_graphdef(
        tmp_path_factory.mktemp("inception") / "classify_image_graph_def.pb"
    )


@pytest.fixture(scope="session")
def inception_tgz(tmp_path_factory):
    return factories.write_inception_tgz(
        tmp_path_factory.mktemp("inception_tgz") / "inception-2015-12-05.tgz"
    )


@pytest.fixture(scope="session")
def inception_pth(tmp_path_factory):
    return factories.write_inception_pth(
        tmp_path_factory.mktemp("inception_pth") / "pt_inception-2015-12-05-random.pth"
    )


@pytest.fixture(scope="session")
def inception_model(inception_pb):
    from nextvlad.extract.inception import load_inception

    return load_inception(inception_pb)


@pytest.fixture(scope="session")
def pca_dir(tmp_path_factory):
    return factories.write_pca(tmp_path_factory.mktemp("pca") / "yt8m_pca")


@pytest.fixture(scope="session")
def pca_tgz(tmp_path_factory):
    return factories.write_pca_tgz(tmp_path_factory.mktemp("pca_tgz") / "yt8m_pca.tgz")
