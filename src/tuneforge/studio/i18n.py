"""The page's words in English and Korean. Korean is the default when the browser asks for it.

One table, keyed by the `data-i18n` names in studio.html; a missing Korean entry shows the
English one, and tests/test_studio_api.py checks both languages have the same keys.
"""

from __future__ import annotations

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "tuneforge studio", "tab_new": "New run", "tab_runs": "Runs", "tab_run": "Run",
        "tab_exports": "Exports", "model": "Model", "model_hint": "the embedded default, a local folder or a Hub id",
        "data": "Data", "data_hint": "a preset, a file on disk, or upload one", "upload": "Upload",
        "method": "Method", "run_name": "Run name", "max_steps": "Steps", "batch_size": "Batch size",
        "learning_rate": "Learning rate", "check": "Check data and settings", "start": "Start",
        "resolved": "will read", "setting": "setting", "value": "value", "source": "source and reason",
        "trained_tokens": "trained tokens are marked", "examples": "examples", "status": "status",
        "base_model": "base model", "figures": "figures", "compare": "Compare selected",
        "stop": "Stop", "resume": "Resume", "evaluate": "Evaluate", "export": "Export", "chat": "Chat",
        "send": "Send", "with_base": "also ask the base model", "step": "step", "eta": "ETA",
        "tokens_s": "tokens/s", "checkpoints": "checkpoints", "log": "log", "loss": "loss",
        "queued": "queued", "running": "running", "finished": "finished", "stopped": "stopped",
        "failed": "failed", "error": "error", "download": "download", "ollama": "Add to Ollama",
        "no_runs": "No runs yet. Start one under New run.", "question": "question", "reference": "reference",
        "base": "base", "tuned": "tuned", "format": "format", "language": "한국어",
    },
    "ko": {
        "title": "tuneforge 스튜디오", "tab_new": "새 학습", "tab_runs": "학습 목록", "tab_run": "학습",
        "tab_exports": "내보내기 목록", "model": "모델", "model_hint": "내장 기본 모델, 로컬 폴더 또는 Hub id",
        "data": "데이터", "data_hint": "프리셋, 디스크의 파일, 또는 업로드", "upload": "업로드",
        "method": "방법", "run_name": "학습 이름", "max_steps": "스텝 수", "batch_size": "배치 크기",
        "learning_rate": "학습률", "check": "데이터와 설정 확인", "start": "시작",
        "resolved": "읽을 경로", "setting": "설정", "value": "값", "source": "출처와 이유",
        "trained_tokens": "학습되는 토큰에 표시", "examples": "예제", "status": "상태",
        "base_model": "기본 모델", "figures": "지표", "compare": "선택한 학습 비교",
        "stop": "중지", "resume": "이어서 학습", "evaluate": "평가", "export": "내보내기", "chat": "대화",
        "send": "보내기", "with_base": "기본 모델에게도 묻기", "step": "스텝", "eta": "남은 시간",
        "tokens_s": "토큰/초", "checkpoints": "체크포인트", "log": "로그", "loss": "손실",
        "queued": "대기 중", "running": "학습 중", "finished": "완료", "stopped": "중지됨",
        "failed": "실패", "error": "오류", "download": "내려받기", "ollama": "Ollama에 추가",
        "no_runs": "아직 학습이 없습니다. 새 학습에서 시작하세요.", "question": "질문", "reference": "정답",
        "base": "기본", "tuned": "튜닝", "format": "형식", "language": "English",
    },
}  # fmt: skip


def pick(accept_language: str) -> str:
    """'ko' when the browser lists Korean before English (or English not at all), else 'en'."""
    for part in accept_language.lower().split(","):
        tag = part.split(";")[0].strip()
        if tag.startswith("ko"):
            return "ko"
        if tag.startswith("en"):
            return "en"
    return "en"
