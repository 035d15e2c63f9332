"""llama-cpp-python's named text chat formats ("chatml", "llama-2", "zephyr", ...): each turns
OpenAI-style messages into the prompt string, and the stop string, that llama-cpp-python 0.3.36's
format of the same name produces, quirks included (see the notes on "intel", "open-orca", "snoozy"
and "saiga"). pybonsai.llama_chat_format registers them under their names.

Most formats are one layout: a head made from the system text, then one piece per turn, which is
`role + between + text + separator` for a turn with text and `role + tail` for one without (the
open assistant turn that asks the model to answer)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["ChatFormatterResponse", "CHAT_FORMATS", "CHATML_CHAT_TEMPLATE", "CHATML_BOS_TOKEN",
           "CHATML_EOS_TOKEN", "MISTRAL_INSTRUCT_CHAT_TEMPLATE", "MISTRAL_INSTRUCT_BOS_TOKEN",
           "MISTRAL_INSTRUCT_EOS_TOKEN", "MIXTRAL_INSTRUCT_CHAT_TEMPLATE", "LLAMA3_INSTRUCT_CHAT_TEMPLATE"]

# Templates llama-cpp-python recognizes in a GGUF's tokenizer.chat_template (exact text).
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_BOS_TOKEN = "<s>"
CHATML_EOS_TOKEN = "<|im_end|>"
_MISTRAL_HEAD = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}")
_MISTRAL_TAIL = ("{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
                 "{% endif %}{% endfor %}")
MISTRAL_INSTRUCT_CHAT_TEMPLATE = _MISTRAL_HEAD + "{{ message['content'] + eos_token + ' ' }}" + _MISTRAL_TAIL
MISTRAL_INSTRUCT_BOS_TOKEN = "<s>"
MISTRAL_INSTRUCT_EOS_TOKEN = "</s>"
MIXTRAL_INSTRUCT_CHAT_TEMPLATE = _MISTRAL_HEAD + "{{ message['content'] + eos_token}}" + _MISTRAL_TAIL
LLAMA3_INSTRUCT_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


@dataclasses.dataclass
class ChatFormatterResponse:
    """What a chat formatter returns: the prompt text, the stop string(s) the format implies, an
    optional StoppingCriteriaList, and whether the prompt already holds its special tokens (then
    no BOS is added when it is tokenized)."""

    prompt: str
    stop: Optional[Union[str, List[str]]] = None
    stopping_criteria: Optional[Any] = None
    added_special: bool = False


Turns = List[Tuple[str, Optional[str]]]


def _first_system(messages: Sequence[Dict[str, Any]]) -> str:
    for message in messages:
        if message["role"] == "system":
            return message.get("content") or ""
    return ""


def _turns(messages: Sequence[Dict[str, Any]], labels: Dict[str, str]) -> Turns:
    """(label, text) for each message whose role has a label; text is None unless a str."""
    return [(labels[m["role"]], m.get("content") if isinstance(m.get("content"), str) else None)
            for m in messages if m["role"] in labels]


def _layout(head: str, turns: Turns, between: str, seps: Sequence[str], tail: str) -> str:
    pieces = [head]
    for i, (label, text) in enumerate(turns):
        pieces.append(label + between + text + seps[i % len(seps)] if text else label + tail)
    return "".join(pieces)


def _role_format(name: str, *, user: str, assistant: str, system: Callable[[str], str],
                 head: str, between: str, seps: Sequence[str], tail: str,
                 stop: Optional[str] = None, labels: Optional[Dict[str, str]] = None,
                 answer: bool = True) -> Callable[..., ChatFormatterResponse]:
    """A formatter of the common layout. `system` makes the system text from the first system
    message's; `head` is "sep" (system + first separator), "sep-if-any" (the same, or nothing
    when the system text is empty) or "bare" (the system text alone). `answer` appends the open
    assistant turn."""

    def formatter(messages: Sequence[Dict[str, Any]], **kwargs: Any) -> ChatFormatterResponse:
        text = system(_first_system(messages))
        lead = text if head == "bare" or (head == "sep-if-any" and not text) else text + seps[0]
        turns = _turns(messages, labels or {"user": user, "assistant": assistant})
        if answer:
            turns.append((assistant, None))
        return ChatFormatterResponse(prompt=_layout(lead, turns, between, seps, tail), stop=stop)

    formatter.__name__ = formatter.__qualname__ = name
    return formatter


def _fixed(text: str) -> Callable[[str], str]:
    return lambda _system: text


def _template(template: str, default: str = "") -> Callable[[str], str]:
    return lambda system: template.format(system_message=system or default)


_same = _template("{system_message}")
_COLON = {"between": ": ", "tail": ":"}  # "Role: text<sep>", the open turn "Role:"
_GLUED = {"head": "bare", "between": "", "tail": ""}  # "<role>text<sep>", the open turn "<role>"
_CHATML = {"head": "sep-if-any", "between": "\n", "tail": "\n"}  # "<role>\ntext<sep>\n"


def format_llama2(messages: Sequence[Dict[str, Any]], **kwargs: Any) -> ChatFormatterResponse:
    """Llama 2 chat: the system block opens the first [INST]; the first user text follows it."""
    system = _first_system(messages)
    system = f"[INST] <<SYS>>\n{system}\n<</SYS>>" if system else ""
    seps = (" ", "</s>")
    pieces = [system + seps[0]]
    for i, (label, text) in enumerate(_turns(messages, {"user": "<s>[INST]", "assistant": "[/INST]"})):
        if system and i == 0:
            pieces.append((text or "") + seps[0])
        else:
            pieces.append(label + text + " " + seps[i % 2] if text else label + " ")
    return ChatFormatterResponse(prompt="".join(pieces) + "[/INST]")


_HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"
format_llama3 = _role_format(
    "format_llama3", user=_HEADER.format("user"), assistant=_HEADER.format("assistant"), system=_fixed(""),
    seps=("<|eot_id|>",), stop="<|eot_id|>", **_GLUED,
    labels={role: _HEADER.format(role) for role in ("system", "user", "assistant")})
format_alpaca = _role_format(
    "format_alpaca", user="### Instruction", assistant="### Response", system=_same, head="sep",
    seps=("\n\n", "</s>"), answer=False, **_COLON)
format_qwen = _role_format(
    "format_qwen", user="<|im_start|>user", assistant="<|im_start|>assistant",
    system=_template("<|im_start|>system\n{system_message}", "You are a helpful assistant."),
    seps=("<|im_end|>\n",), stop="<|endoftext|>", **_CHATML)
format_vicuna = _role_format(
    "format", user="USER", assistant="ASSISTANT", head="sep", seps=(" ", "</s>"), **_COLON,
    system=_fixed("A chat between a curious user and an artificial intelligence assistant. The assistant "
                  "gives helpful, detailed, and polite answers to the user's questions."))
format_oasst_llama = _role_format(
    "format_oasst_llama", user="<|prompter|>", assistant="<|assistant|>", seps=("</s>",), **_GLUED,
    system=lambda system: f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n")
format_baichuan2 = _role_format(
    "format_baichuan2", user="<reserved_106>", assistant="<reserved_107>", system=_same, seps=("",), **_GLUED)
format_baichuan = _role_format(
    "format_baichuan", user="<reserved_102>", assistant="<reserved_103>", system=_same, seps=("",), **_GLUED)
_OPENBUDDY_SYSTEM = """You are a helpful, respectful and honest INTP-T AI Assistant named Buddy. You are talking to a human User.
Always answer as helpfully and logically as possible, while being safe. Your answers should not include any harmful, political, religious, unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in nature.
If a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. If you don't know the answer to a question, please don't share false information.
You can speak fluently in many languages, for example: English, Chinese.
You cannot access the internet, but you have vast knowledge, cutoff: 2021-09.
You are trained by OpenBuddy team, (https://openbuddy.ai, https://github.com/OpenBuddy/OpenBuddy), you are based on LLaMA and Falcon transformers model, not related to GPT or OpenAI.

"""
format_openbuddy = _role_format(
    "format_openbuddy", user="User", assistant="Assistant", system=_fixed(_OPENBUDDY_SYSTEM), head="sep",
    seps=("\n",), **_COLON)
format_redpajama_incite = _role_format(
    "format_redpajama_incite", user="<human>", assistant="<bot>", system=_same, head="sep", seps=("\n",),
    stop="<human>", **_COLON)
# llama-cpp-python builds an "### Instruction:" system block for snoozy and then uses the bare text.
format_snoozy = _role_format(
    "format_snoozy", user="### Prompt", assistant="### Response", head="sep", seps=("\n",), stop="###",
    system=_template("{system_message}", "The prompt below is a question to answer, a task to complete, or a "
                     "conversation to respond to; decide which and write an appropriate response."), **_COLON)
format_phind = _role_format(
    "format_phind", user="### User Message", assistant="### Assistant", head="sep", seps=("\n\n",), **_COLON,
    system=_fixed("### System Prompt\nYou are an intelligent programming assistant."))
# llama-cpp-python's intel format keeps "{system_message}" unfilled and its labels end in ":" already.
format_intel = _role_format(
    "format_intel", user="### User:", assistant="### Assistant:", system=_fixed("### System:\n{system_message}"),
    head="sep", seps=("\n",), **_COLON)
# llama-cpp-python's open-orca maps roles "User"/"Assistant" (capitalized), so no OpenAI message
# matches: the prompt is the system text and the open assistant turn.
format_open_orca = _role_format(
    "format_open_orca", user="User", assistant="Assistant", head="sep", seps=("<|end_of_turn|>\n",),
    between=": ", tail=": ", stop="User", labels={"User": "User", "Assistant": "Assistant"},
    system=_fixed(
        "You are a helpful assistant. Please answer truthfully and write out your thinking step by step to be "
        "sure you get the right answer. If you make a mistake or encounter an error in your thinking, say so out "
        "loud and attempt to correct it. If you don't know or aren't sure about something, say so clearly. You "
        "will act as a professional logician, mathematician, and physicist. You will also act as the most "
        "appropriate type of expert to answer any particular question or solve the relevant problem; state which "
        "expert type your are, if so. Also think of any particular named expert that would be ideal to answer the "
        "relevant question or solve the relevant problem; name and act as them, if appropriate."))
format_mistrallite = _role_format(
    "format_mistrallite", user="<|prompter|>", assistant="</s>\n<|assistant|>", seps=(" ",), **_GLUED,
    system=_template("<|system|>{system_message}</s>"))
format_zephyr = _role_format(
    "format_zephyr", user="<|user|>\n", assistant="<|assistant|>\n", system=_template("<|system|>\n{system_message}"),
    seps=("</s>\n",), stop="</s>", **_CHATML)
format_pygmalion = _role_format(
    "format_pygmalion", user="<|user|>", assistant="<|model|>", system=_template("<|system|>{system_message}"),
    seps=("\n\n",), stop="\n", **_CHATML)
format_chatml = _role_format(
    "format_chatml", user="<|im_start|>user", assistant="<|im_start|>assistant",
    system=_template("<|im_start|>system\n{system_message}"), seps=("<|im_end|>\n",), stop="<|im_end|>", **_CHATML)
format_chatglm3 = _role_format(
    "format_chatglm3", user="<|user|>", assistant="<|assistant|>", system=_template("<|system|>\n{system_message}"),
    head="bare", between="\n ", seps=("",), tail="", stop="</s>")
format_openchat = _role_format(
    "format_openchat", user="GPT4 Correct User: ", assistant="<|end_of_turn|>GPT4 Correct Assistant: ",
    system=_template("{system_message}<|end_of_turn|>"), seps=("<|end_of_turn|>\n",), stop="<|end_of_turn|>",
    **_CHATML)
format_gemma = _role_format(  # Gemma has no system role: system messages are left out
    "format_gemma", user="<start_of_turn>user\n", assistant="<start_of_turn>model\n", system=_fixed(""),
    seps=("<end_of_turn>\n",), stop="<end_of_turn>\n", **_GLUED)


def format_mistral_instruct(messages: Sequence[Dict[str, Any]], **kwargs: Any) -> ChatFormatterResponse:
    """[INST] user [/INST]answer</s>...; system messages are left out."""
    pieces = []
    for message in messages:
        content = message.get("content")
        if message["role"] == "user" and isinstance(content, str):
            pieces.append("[INST] " + content)
        elif message["role"] == "assistant" and content is not None:
            pieces.append(" [/INST]" + content + "</s>")
    return ChatFormatterResponse(prompt="".join(pieces) + " [/INST]", stop="</s>")


def format_saiga(messages: Sequence[Dict[str, Any]], **kwargs: Any) -> ChatFormatterResponse:
    """<s>role\\ntext</s> per message, then "<s>bot". llama-cpp-python maps the roles user, system and
    "bot", so OpenAI's assistant messages are left out."""
    turns = _turns(messages, {"user": "user", "bot": "bot", "system": "system"})
    prompt = "".join(f"<s>{label}\n{text}</s>" if text else f"<s>{label}\n" for label, text in turns)
    return ChatFormatterResponse(prompt=(prompt + "<s>bot").strip())


CHAT_FORMATS: Dict[str, Callable[..., ChatFormatterResponse]] = {
    "llama-2": format_llama2, "llama-3": format_llama3, "alpaca": format_alpaca, "qwen": format_qwen,
    "vicuna": format_vicuna, "oasst_llama": format_oasst_llama, "baichuan-2": format_baichuan2,
    "baichuan": format_baichuan, "openbuddy": format_openbuddy, "redpajama-incite": format_redpajama_incite,
    "snoozy": format_snoozy, "phind": format_phind, "intel": format_intel, "open-orca": format_open_orca,
    "mistrallite": format_mistrallite, "zephyr": format_zephyr, "pygmalion": format_pygmalion,
    "chatml": format_chatml, "mistral-instruct": format_mistral_instruct, "chatglm3": format_chatglm3,
    "openchat": format_openchat, "saiga": format_saiga, "gemma": format_gemma,
}
