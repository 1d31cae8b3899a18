"""The CPU image's self-test, run again on this CPU: what `llmhost build` ran before tagging it."""

from __future__ import annotations

from llmhost.facts import our_labels
from llmhost.plan.planner import IMAGES
from llmhost.verify import selftest
from llmhost.verify.doctor.result import Context, Finding, fail, needs_engine, ok, skip, warn

FIX = "llmhost build --profile cpu"


@needs_engine
def cpu_image_selftest(ctx: Context) -> Finding:
    """Live: llama-bench of the built llama-cpu image on small models, every CPU path, unless this
    very image already passed it on this CPU model (a memo in llmhost's cache, from the build or
    an earlier doctor); from a snapshot: the verdict the build recorded."""
    tag = IMAGES["llama-cpu"]
    image = next((i for i in ctx.facts.containers.images if tag in i.tags), None)
    if image is None or (ctx.plan and not ctx.plan.service("llama-cpu")):
        return skip("no llama-cpu image built (or not in this profile)")
    recorded = image.labels.get(our_labels.SELFTEST, "not recorded")
    if not ctx.live:
        cpu = image.labels.get(our_labels.SELFTEST_CPU, "an unrecorded CPU")
        text = f"{tag} self-test at build time: {recorded} (on {cpu})"
        return ok(text) if recorded == "passed" else warn(text, "llmhost doctor (on that host)")
    cpu = ctx.facts.cpu.model_name
    known = selftest.remembered(image.id, cpu) if image.id else None
    if known:
        return ok(f"{known} (this image, on this CPU model)")
    import docker
    from docker.errors import DockerException

    try:
        client = docker.APIClient(timeout=600)
        result = selftest.run_selftest(client, tag)
        client.close()
    except DockerException as exc:
        return warn(f"could not run the self-test of {tag}: {str(exc).splitlines()[0]}")
    if result.passed:
        if image.id:
            selftest.remember(image.id, cpu, result.summary())
        return ok(result.summary())
    return fail(f"{tag} crashes on this CPU: {result.summary()}", FIX)
