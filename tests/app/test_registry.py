import pytest

from core.errors import UnknownNameError
from core.registry import Registry
from models import create_phase, list_phases


def test_unknown_names_list_the_valid_ones_and_suggest_the_closest() -> None:
    registry: Registry[int] = Registry("phase")
    registry.register("supervised", 1)
    registry.register("vae", 2)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'vae'\?.*supervised, vae"):
        registry.get("vea")


def test_registering_a_name_twice_is_refused() -> None:
    registry: Registry[int] = Registry("collector")
    registry.register("demo", 1)
    with pytest.raises(ValueError):
        registry.register("demo", 2)


def test_every_phase_declares_its_facts() -> None:
    specs = {spec.name: spec for spec in list_phases()}
    assert {"supervised", "vae", "hybrid"} <= set(specs)
    assert specs["supervised"].output == "class_probabilities"
    assert specs["vae"].needs_labels is False
    assert specs["hybrid"].components == ("supervised", "vae") and not specs["hybrid"].trainable


def test_create_phase_refuses_unknown_settings() -> None:
    with pytest.raises(TypeError, match="no setting laten_dim"):
        create_phase("vae", ["normal", "tumor"], laten_dim=4)


def test_pretrained_weights_from_a_local_file(tmp_path) -> None:
    """Offline machines get pretrained weights from a file; the head is replaced, the body kept."""
    import timm
    import torch

    from models.supervised import create_backbone

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("resnet18", 3, pretrained=str(path))
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.conv1.weight.shape[1] == 1 and model.get_classifier().out_features == 3
    with pytest.raises(ValueError, match="does not exist"):
        create_backbone("resnet18", 3, pretrained=str(tmp_path / "missing.pth"))


def test_attention_blocks_are_added_to_a_resnet_by_name_and_refused_elsewhere(tmp_path) -> None:
    """"resnet10t+cbam": timm's ResNet with CBAM in every block, from scratch; a name timm
    cannot take says what to use instead."""
    from timm.layers.cbam import CbamModule
    from timm.layers.squeeze_excite import SEModule

    from models.supervised import create_backbone

    model = create_backbone("resnet10t+cbam", 2, pretrained=True)  # no weights hold CBAM: from scratch
    assert isinstance(model.layer1[0].se, CbamModule) and model.pretrained_source == ""
    assert isinstance(create_backbone("resnet18+se", 2, pretrained=False).layer4[1].se, SEModule)
    for name, problem in (("efficientnet_b0+cbam", "added to timm's ResNets"), ("resnet10t+nonlocal", "use one of")):
        with pytest.raises(ValueError, match=problem):
            create_backbone(name, 2, pretrained=False)
    with pytest.raises(ValueError, match="no pretrained weights hold"):
        create_backbone("resnet18+se", 2, pretrained=str(tmp_path / "resnet18.pth"))
