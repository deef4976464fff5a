"""The template library: how a read collection's contexts and pairs are worded as pre-training text.

Instruction pre-training works because the model sees the same kind of knowledge asked for in many
surface forms; a handful of fixed layouts would teach it the layouts instead. So the library is large
and every choice is independent: the pair patterns (free-form, multiple-choice, chain-of-thought),
how a passage is introduced, how options are labelled, who speaks in a dialog. All wording is ours.

Field names used by the templates:

- pair bodies: ``{question}``, ``{answer}``, ``{options}`` (MC), ``{reasoning}`` (CoT);
- layouts: ``{context}``, ``{questions}``, ``{answers}``, ``{examples}``, ``{test}``, ``{dialog}``,
  ``{pairs}``, ``{input}``, ``{output}``, ``{next}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipt_engine.templify.template import Template


@dataclass(frozen=True)
class PairPattern:
    """One way to write a pair: ``q_prefix + q_body + joint + a_prefix + a_body``; pairs joined by ``sep``.

    Prefixes are kept apart from bodies because dialogs, numbered lists and inline few-shot layouts
    reuse the bodies with their own speakers, numbers and labels.
    """

    q_prefix: str
    q_body: Template
    a_prefix: str
    a_body: Template
    joint: str
    sep: str


def _pairs(rows: list[tuple[str, str, str, str, str, str]]) -> tuple[PairPattern, ...]:
    return tuple(PairPattern(qp, Template(qb), ap, Template(ab), j, s) for qp, qb, ap, ab, j, s in rows)


N2 = "\n\n"

# ---- free-form question answering ----------------------------------------------------------------
FREE_FORM = _pairs([
    ("Question: ", "{question}", "Answer: ", "{answer}", "\n", N2),
    ("Question: ", "{question}", "Answer: ", "{answer}", N2, "\n\n\n"),
    ("Q: ", "{question}", "A: ", "{answer}", "\n", N2),
    ("Q: ", "{question}", "A: ", "{answer}", " ", "\n"),
    ("Q. ", "{question}", "A. ", "{answer}", "\n", N2),
    ("", "{question}", "", "{answer}", "\n", N2),
    ("", "{question}", "", "{answer}", " ", N2),
    ("", "{question}", "Answer: ", "{answer}", "\n", N2),
    ("", "{question}", "Reply: ", "{answer}", "\n", N2),
    ("Query: ", "{question}", "Response: ", "{answer}", "\n", N2),
    ("Input: ", "{question}", "Output: ", "{answer}", "\n", N2),
    ("input: ", "{question}", "output: ", "{answer}", "\n", "\n"),
    ("In: ", "{question}", "Out: ", "{answer}", "\n", N2),
    ("Problem: ", "{question}", "Solution: ", "{answer}", "\n", N2),
    ("Exercise: ", "{question}", "Solution: ", "{answer}", N2, "\n\n\n"),
    ("Prompt: ", "{question}", "Completion: ", "{answer}", "\n", N2),
    ("Ask: ", "{question}", "Answer: ", "{answer}", "\n", N2),
    ("QUESTION: ", "{question}", "ANSWER: ", "{answer}", "\n", N2),
    ("Question:\n", "{question}", "Answer:\n", "{answer}", "\n", N2),
    ("Question ", "- {question}", "Answer ", "- {answer}", "\n", N2),
    ("", "Answer the question: {question}", "", "{answer}", "\n", N2),
    ("", "Please answer: {question}", "Answer: ", "{answer}", "\n", N2),
    ("", "Based on the passage, {question}", "", "{answer}", "\n", N2),
    ("", "According to the text, {question}", "Answer: ", "{answer}", "\n", N2),
    ("", "Here is a question about the text: {question}", "The answer: ", "{answer}", "\n", N2),
    ("", "{question}\nWhat is the answer?", "", "{answer}", "\n", N2),
    ("", "{question}\nGive a short answer.", "", "{answer}", "\n", N2),
    ("", "Respond to this: {question}", "Response: ", "{answer}", "\n", N2),
    ("Q> ", "{question}", "A> ", "{answer}", "\n", N2),
    ("[Question] ", "{question}", "[Answer] ", "{answer}", "\n", N2),
    ("## Question\n", "{question}", "## Answer\n", "{answer}", N2, N2),
    ("**Question:** ", "{question}", "**Answer:** ", "{answer}", "\n", N2),
    ("Question -> ", "{question}", "Answer -> ", "{answer}", "\n", N2),
    ("", "{question}", "=> ", "{answer}", "\n", N2),
    ("", "Quiz: {question}", "Key: ", "{answer}", "\n", N2),
    ("Task: ", "{question}", "Result: ", "{answer}", "\n", N2),
    ("", "I was asked: {question}", "I answered: ", "{answer}", "\n", N2),
    ("", "Can you tell me: {question}", "Sure. ", "{answer}", "\n", N2),
    ("Test question: ", "{question}", "Expected answer: ", "{answer}", "\n", N2),
    ("", "Think about the text and answer. {question}", "", "{answer}", "\n", N2),
    ("Question: ", "{question}", "Short answer: ", "{answer}", "\n", "\n---\n"),
    ("Q: ", "{question}", "A: ", "{answer}", "\n", "\n***\n"),
    ("", "{question}", "-- ", "{answer}", "\n", N2),
    ("Check: ", "{question}", "Verified answer: ", "{answer}", "\n", N2),
])

# ---- multiple choice ({options} is the rendered option list) ---------------------------------------
MULTIPLE_CHOICE = _pairs([
    ("Question: ", "{question}\nOptions:\n{options}", "Answer: ", "{answer}", "\n", N2),
    ("Question: ", "{question}\nChoices:\n{options}", "Answer: ", "{answer}", "\n", N2),
    ("Q: ", "{question}\n{options}", "A: ", "{answer}", "\n", N2),
    ("", "{question}\n{options}", "", "{answer}", "\n", N2),
    ("", "{question}\nPick one:\n{options}", "", "{answer}", "\n", N2),
    ("", "{question}\nSelect the correct option.\n{options}", "Correct option: ", "{answer}", "\n", N2),
    ("", "{question}\nWhich of these is right?\n{options}", "", "{answer}", "\n", N2),
    ("", "Choose the best answer. {question}\n{options}", "Best answer: ", "{answer}", "\n", N2),
    ("", "Multiple choice: {question}\n{options}", "Answer: ", "{answer}", "\n", N2),
    ("Problem: ", "{question}\nPossible answers:\n{options}", "Solution: ", "{answer}", "\n", N2),
    ("", "{question}\nAvailable choices:\n{options}", "The answer is ", "{answer}", "\n", N2),
    ("", "{question}\n\nOptions are:\n{options}", "", "{answer}", N2, N2),
    ("Input: ", "{question}\nCandidates:\n{options}", "Output: ", "{answer}", "\n", N2),
    ("", "Read the question and pick an option.\n{question}\n{options}", "Pick: ", "{answer}", "\n", N2),
    ("", "{question} Options: {options}", "", "{answer}", "\n", N2),
    ("", "{question}\nAnswer with one of the following:\n{options}", "", "{answer}", "\n", N2),
    ("QUESTION: ", "{question}\nOPTIONS:\n{options}", "ANSWER: ", "{answer}", "\n", N2),
    ("", "Quiz\n{question}\n{options}", "Key: ", "{answer}", "\n", N2),
    ("", "{question}\nSelect from:\n{options}", "Selected: ", "{answer}", "\n", N2),
    ("", "Which option answers the question? {question}\n{options}", "", "{answer}", "\n", N2),
    ("Exam question: ", "{question}\n{options}", "Correct answer: ", "{answer}", "\n", N2),
    ("", "{question}\nThe options:\n{options}\nYour choice?", "", "{answer}", "\n", N2),
    ("Q: ", "{question}\nChoose one of:\n{options}", "A: ", "{answer}", "\n", N2),
    ("", "Given the text, {question}\n{options}", "Answer: ", "{answer}", "\n", N2),
    ("Test: ", "{question}\n{options}", "Result: ", "{answer}", N2, N2),
    ("", "{question}\nSelect one answer from the list.\n{options}", "", "{answer}", "\n", N2),
    ("", "{question}\nPossible responses:\n{options}", "Response: ", "{answer}", "\n", N2),
    ("[Question] ", "{question}\n[Options]\n{options}", "[Answer] ", "{answer}", "\n", N2),
    ("", "{question}\nOne of these is correct:\n{options}", "It is ", "{answer}", "\n", N2),
    ("## Question\n", "{question}\n\n{options}", "## Answer\n", "{answer}", N2, N2),
    ("", "Options:\n{options}\nQuestion: {question}", "Answer: ", "{answer}", "\n", N2),
    ("", "{question}\nMark the right option.\n{options}", "Marked: ", "{answer}", "\n", N2),
])

# ---- chain of thought ({reasoning} before {answer}) ------------------------------------------------
CHAIN_OF_THOUGHT = _pairs([
    ("Question: ", "{question}\nLet's think step by step.", "Answer: ",
     "{reasoning}\nTherefore, the answer is {answer}", "\n", N2),
    ("Question: ", "{question}", "Answer: ", "{reasoning}\nSo the answer is {answer}", "\n", N2),
    ("Q: ", "{question}\nThink it through first.", "A: ", "{reasoning}\nSo: {answer}", "\n", N2),
    ("", "{question}\nExplain your reasoning.", "", "{reasoning}\nHence the answer is {answer}", "\n", N2),
    ("", "{question}", "Reasoning: ", "{reasoning}\nAnswer: {answer}", "\n", N2),
    ("", "{question}\nReason step by step, then answer.", "", "{reasoning}\nFinal answer: {answer}",
     "\n", N2),
    ("Problem: ", "{question}", "Solution: ", "{reasoning}\nThe answer is {answer}", "\n", N2),
    ("Input: ", "{question}", "Output: ", "Rationale: {reasoning}\nAnswer: {answer}", "\n", N2),
    ("", "{question}\nWork it out.", "Working: ", "{reasoning}\nResult: {answer}", "\n", N2),
    ("", "{question}\nShow your thinking.", "My thinking: ", "{reasoning}\nMy answer: {answer}", "\n", N2),
    ("Question: ", "{question}", "", "Let me think. {reasoning}\nThe answer is {answer}", "\n", N2),
    ("", "{question}\nGive the reasons before the answer.", "", "Reasons: {reasoning}\nAnswer: {answer}",
     "\n", N2),
    ("Q: ", "{question}", "A: ", "{reasoning} That is why the answer is {answer}", "\n", N2),
    ("", "{question}\nWalk through the logic.", "", "{reasoning}\nConclusion: {answer}", "\n", N2),
    ("", "{question}", "Step by step: ", "{reasoning}\nThus, {answer}", "\n", N2),
    ("", "Answer with an explanation: {question}", "Explanation: ", "{reasoning}\nAnswer: {answer}",
     "\n", N2),
    ("Exercise: ", "{question}", "Solution: ", "{reasoning}\nTherefore: {answer}", N2, N2),
    ("", "{question}\nWhy? Explain, then answer.", "", "{reasoning}\nIn short: {answer}", "\n", N2),
    ("QUESTION: ", "{question}", "ANSWER: ", "{reasoning}\nFINAL: {answer}", "\n", N2),
    ("", "{question}\nFirst think, then respond.", "Thought: ", "{reasoning}\nResponse: {answer}", "\n", N2),
    ("", "Puzzle: {question}", "Analysis: ", "{reasoning}\nSolution: {answer}", "\n", N2),
    ("", "{question}", "", "To answer this: {reasoning}\nAnswer: {answer}", "\n", N2),
    ("", "{question}\nDerive the answer.", "Derivation: ", "{reasoning}\nAnswer: {answer}", "\n", N2),
    ("Task: ", "{question}", "Chain of reasoning: ", "{reasoning}\nResult: {answer}", "\n", N2),
    ("", "{question}\nLet's work this out carefully.", "", "{reasoning}\nAll things considered: {answer}",
     "\n", N2),
    ("", "Q: {question}\nReason first.", "", "Because {reasoning}\nthe answer is {answer}", "\n", N2),
    ("[Question] ", "{question}", "[Reasoning] ", "{reasoning}\n[Answer] {answer}", "\n", N2),
    ("## Question\n", "{question}", "## Reasoning\n", "{reasoning}\n\n## Answer\n{answer}", N2, N2),
    ("", "{question}\nJustify your answer.", "", "Answer: {answer}\nJustification: {reasoning}", "\n", N2),
    ("", "{question}", "", "Short answer: {answer}\nWhy: {reasoning}", "\n", N2),
    ("Question: ", "{question}\nThink aloud.", "", "{reasoning}\nSo my answer is {answer}", "\n", N2),
    ("", "Solve and explain: {question}", "", "{reasoning}\nAnswer => {answer}", "\n", N2),
])

# ---- how a passage is introduced in the Classic mode: (before, between passage and pairs) ----------
READ_INTROS: tuple[tuple[Template, str], ...] = tuple(
    (Template(before), between)
    for before, between in [
        ("{context}", N2),
        ("{context}", "\n\n\n"),
        ("{context}", "\n"),
        ("Read the text below and answer the questions.\n\n{context}", N2),
        ("Passage:\n{context}", N2),
        ("Article:\n{context}", "\n\nQuestions about the article:\n"),
        ("Text: {context}", N2),
        ("Context: {context}", N2),
        ("Here is a text:\n{context}", "\n\nNow answer some questions about it.\n"),
        ("{context}", "\n\nAnswer the following questions about the text above.\n"),
        ("Document:\n{context}", "\n\nQuestions:\n"),
        ("Background\n{context}", "\n\nComprehension check\n"),
        ("Reading material:\n{context}", N2),
        ("Study the passage.\n{context}", "\n\nThen answer:\n"),
        ("{context}", "\n\nQ&A:\n"),
        ("Excerpt\n\"\"\"\n{context}\n\"\"\"", N2),
    ]
)

# ---- rare inversion: the pairs first, then the passage ---------------------------------------------
INVERSIONS = tuple(
    Template(t)
    for t in [
        "{pairs}\n\nThe questions above are about this text:\n{context}",
        "{pairs}\n\nSource text:\n{context}",
        "Answer these from the passage that follows.\n{pairs}\n\nPassage:\n{context}",
        "{pairs}\n\n{context}",
        "Questions first.\n{pairs}\n\nNow the text they refer to:\n{context}",
        "{pairs}\n\nBased on:\n{context}",
    ]
)

# ---- dialog: (opening line after the passage, asking speaker, answering speaker, turn separator) ----
DIALOGS: tuple[tuple[str, str, str, str], ...] = (
    ("\n\nA conversation about the text:\n", "User: ", "Assistant: ", "\n"),
    ("\n\n", "Student: ", "Teacher: ", "\n"),
    ("\n\nDiscussion:\n", "Person A: ", "Person B: ", "\n"),
    ("\n\n", "Reader: ", "Expert: ", "\n\n"),
    ("\n\nChat log\n", "[user] ", "[bot] ", "\n"),
    ("\n\n", "Human: ", "AI: ", "\n\n"),
    ("\n\nInterview:\n", "Interviewer: ", "Guest: ", "\n"),
    ("\n\n", "Customer: ", "Agent: ", "\n"),
    ("\n\nA friend asks about it.\n", "Friend: ", "Me: ", "\n"),
    ("\n\n", ">> ", "<< ", "\n"),
    ("\n\nTutoring session\n", "Learner: ", "Tutor: ", "\n"),
)

# ---- next-turn dialog: the conversation so far, then the turn to continue ----------------------------
NEXT_TURN = tuple(
    Template(t)
    for t in [
        "{context}\n\nConversation so far:\n{dialog}\n\nContinue with the next exchange.\n{next}",
        "{context}\n\n{dialog}\n\nWhat comes next in the dialog?\n{next}",
        "{context}\n\nDialog history:\n{dialog}\n\nNext turn:\n{next}",
        "{context}\n\nHere is a chat about the passage.\n{dialog}\n\nWrite the following turn.\n{next}",
        "{context}\n\n{dialog}\n\nThe conversation goes on:\n{next}",
        "Read and continue the conversation.\n{context}\n\n{dialog}\n{next}",
    ]
)

# ---- numbered questions: all questions first, then all answers --------------------------------------
NUMBERED = tuple(
    Template(t)
    for t in [
        "{context}\n\nAnswer the following questions.\n{questions}\n\nAnswers:\n{answers}",
        "{context}\n\nQuestions:\n{questions}\n\nAnswers:\n{answers}",
        "Read the text and answer every question.\n\n{context}\n\n{questions}\n\nAnswer key:\n{answers}",
        "{context}\n\nHomework\n{questions}\n\nSolutions\n{answers}",
        "Text:\n{context}\n\nQuestions about the text:\n{questions}\n\nResponses:\n{answers}",
        "{context}\n\nQuiz ({count} questions)\n{questions}\n\nKey\n{answers}",
        "{context}\n\nTry to answer these:\n{questions}\n\nHere are the answers:\n{answers}",
        "{context}\n\nReview questions\n{questions}\n\nSuggested answers\n{answers}",
        "Passage\n{context}\n\nExercise\n{questions}\n\nWorked answers\n{answers}",
        "{context}\n\n{questions}\n\n{answers}",
    ]
)

# Numbering of questions and answers: (label before the item, with {n} for the number).
NUMBER_LABELS = tuple(
    Template(t) for t in ["{n}. ", "{n}) ", "({n}) ", "Q{n}: ", "Question {n}: ", "#{n} ", "[{n}] ", "{n} - "]
)

# ---- inline few-shot: (head, example, example with reasoning, test, separator between examples) -----
INLINE: tuple[tuple[Template, Template, Template, Template, str], ...] = tuple(
    (Template(h), Template(e), Template(x), Template(t), s)
    for h, e, x, t, s in [
        ("{context}\n\nExamples:\n", "Input: {input}\nOutput: {output}",
         "Input: {input}\nOutput: {output}\nWhy: {reasoning}", "Now you.\nInput: {input}\nOutput: {output}", N2),
        ("{context}\n\nHere are some solved examples.\n", "Q: {input}\nA: {output}",
         "Q: {input}\nA: {output}\nRationale: {reasoning}", "Q: {input}\nA: {output}", "\n"),
        ("Context:\n{context}\n\nLearn from these examples, then solve the last one.\n",
         "Example: {input}\nSolution: {output}", "Example: {input}\nSolution: {output}\nExplanation: {reasoning}",
         "Problem: {input}\nSolution: {output}", N2),
        ("{context}\n\nWorked examples:\n", "{input}\n=> {output}", "{input}\n=> {output} (because {reasoning})",
         "Your turn: {input}\n=> {output}", N2),
        ("Background: {context}\n\n", "Sample question: {input}\nSample answer: {output}",
         "Sample question: {input}\nSample answer: {output}\nReason: {reasoning}",
         "New question: {input}\nAnswer: {output}", N2),
        ("{context}\n\nStudy the demonstrations below.\n", "Demo input: {input}\nDemo output: {output}",
         "Demo input: {input}\nDemo output: {output}\nNote: {reasoning}", "Test input: {input}\nTest output: {output}",
         N2),
        ("Part 1. Text\n{context}\n\nPart 2. Examples\n", "{input}\nAnswer: {output}",
         "{input}\nAnswer: {output}\nExplanation: {reasoning}", "Part 3. Exercise\n{input}\nAnswer: {output}", "\n"),
        ("{context}\n\nA few questions with answers, then one more:\n", "- {input} -> {output}",
         "- {input} -> {output}; reasoning: {reasoning}", "- {input} -> {output}", "\n"),
        ("Teacher: Read this.\n{context}\nTeacher: Here is how to answer such questions.\n",
         "{input}\nSolution: {output}", "{input}\nSolution: {output}\nBecause: {reasoning}",
         "Teacher: Now solve this one: {input}\nStudent: {output}", N2),
        ("{context}\n\nFollow the pattern of the examples.\n", "Example input: {input}\nExample output: {output}",
         "Example input: {input}\nExample output: {output}\nReasoning: {reasoning}",
         "Input: {input}\nOutput: {output}", N2),
        ("Given the text and the examples, answer the final question.\n{context}\n\n",
         "Question: {input}\nAnswer: {output}", "Question: {input}\nAnswer: {output}\nHere is why: {reasoning}",
         "Final question: {input}\nAnswer: {output}", N2),
    ]
)

# ---- multiple-choice option labels: (label of option i, with {l} for its letter/number) --------------
# Each style labels option i with the i-th symbol of its sequence.
LETTERS_UPPER = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
LETTERS_LOWER = tuple("abcdefghijklmnopqrstuvwxyz")
DIGITS = tuple(str(i) for i in range(1, 27))
ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii")

OPTION_STYLES: tuple[tuple[Template, tuple[str, ...] | None], ...] = (
    (Template("{l}. "), LETTERS_UPPER),
    (Template("({l}) "), LETTERS_UPPER),
    (Template("{l}) "), LETTERS_UPPER),
    (Template("[{l}] "), LETTERS_UPPER),
    (Template("{l}: "), LETTERS_UPPER),
    (Template("({l}) "), LETTERS_LOWER),
    (Template("{l}. "), LETTERS_LOWER),
    (Template("{l}) "), DIGITS),
    (Template("{l}. "), DIGITS),
    (Template("({l}) "), ROMAN),
    (Template("Option {l}: "), LETTERS_UPPER),
    (Template("- "), None),
    (Template("* "), None),
    (Template("+ "), None),
)

# How the options of one question are put together.
OPTION_JOINS = ("\n", "\n", "\n", " ", "; ", "\n")

# An extra last option that none of the others is right (added now and then, as a distractor).
NONE_OF_THE_ABOVE = (
    "None of the above",
    "None of these",
    "none of the listed options",
    "No option is correct",
    "Not enough information",
    "It cannot be determined",
    "None of the given choices",
    "Other",
    "All of the options are wrong",
    "The text does not say",
)

# ---- separators between the few-shot examples of one run -------------------------------------------
RUN_SEPARATORS = ("\n\n", "\n\n\n", "\n\n\n\n", "\n\n---\n\n", "\n\n* * *\n\n", "\n\n\n\n\n")

# ---- modes and their weights (Classic dominates; multi-pair modes need >= 2 pairs per entry) -------
MODES_FEW_PAIRS = (("classic", 95), ("dialog", 5))
MODES_MANY_PAIRS = (("classic", 80), ("dialog", 5), ("numbered", 5), ("inline", 5), ("next_turn", 5))
INVERSION_PERCENT = 5
NONE_OF_THE_ABOVE_PERCENT = 10
