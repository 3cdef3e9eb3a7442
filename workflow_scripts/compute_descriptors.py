from potflow.config import descriptor_key, prepare_config
from potflow.descriptors import compute_group_descriptors
from potflow.errors import PotflowInputError
from potflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def body():
    # The config is read here, not passed as params: Snakemake would rerun the job on any
    # config edit (even reordered keys). The settings' hash, {dkey} in the path, decides.
    cfg = prepare_config(sm.config)
    if descriptor_key(cfg) != sm.wildcards.dkey:
        raise PotflowInputError(
            sm.output[0], f"the config gives descriptor key {descriptor_key(cfg)}, not {sm.wildcards.dkey}"
        )
    meta = compute_group_descriptors(cfg, sm.input[0], sm.output[0], sm.wildcards.group)
    print(
        f"{meta['group']}: {meta['num_configs']} configs, {meta['num_atoms']} atoms, "
        f"{meta['num_grad_rows']} gradient rows, {meta['seconds']} s"
    )


run_rule(body, sm.log[0])
