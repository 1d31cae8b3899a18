#!/usr/bin/python
"""Ansible module (run on the controller): validate an llmhost.yaml mapping with llmhost's own
parser from the checkout, before anything is installed or written on a target."""

from __future__ import annotations

import os
import sys

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_config_check
short_description: Validate llmhost configuration with llmhost.plan.config.parse_config
description:
  - Imports C(llmhost.plan.config) from the checkout in O(src) (it needs only PyYAML, which Ansible
    has) and parses O(config) exactly as C(llmhost) will on the target.
  - Fails with llmhost's one-line message naming the bad key. Changes nothing.
options:
  src:
    description: Root of the llmhost checkout.
    type: path
    required: true
  config:
    description: The mapping that will be written as C(llmhost.yaml).
    type: dict
    required: true
  name:
    description: Variable name to mention in messages.
    type: str
    default: llmhost_facts_config
author: llmhost
"""

RETURN = r"""
profile:
  description: The configuration's profile after defaults.
  type: str
  returned: success
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "src": {"type": "path", "required": True},
            "config": {"type": "dict", "required": True},
            "name": {"type": "str", "default": "llmhost_facts_config"},
        },
        supports_check_mode=True,
    )
    sys.path.insert(0, module.params["src"])
    try:
        from llmhost.errors import LlmhostError
        from llmhost.plan.config import parse_config
    except ImportError as exc:
        module.fail_json(
            msg=f"cannot import llmhost.plan.config from {module.params['src']}: {exc}"
        )
    try:
        config = parse_config(
            module.params["config"], os.path.join("<ansible>", module.params["name"])
        )
    except LlmhostError as exc:
        module.fail_json(msg=f"{module.params['name']} is not a valid llmhost.yaml: {exc}")
    module.exit_json(changed=False, profile=config.profile)


if __name__ == "__main__":
    main()
