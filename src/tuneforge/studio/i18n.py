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
        "method_auto": "auto: SFT, or continued pre-training when the data is raw text",
        "method_sft": "SFT: questions and answers", "method_pretrain": "continued pre-training: raw text",
        "method_dpo": "DPO: preference pairs", "method_orpo": "ORPO: preference pairs, no reference model",
        "method_kto": "KTO: answers marked good or bad",
        "method_hint": "DPO, ORPO and KTO read medical-preferences when no data is given",
        "adapter": "Start from", "adapter_none": "the base model",
        "adapter_hint": "a finished run's adapter, e.g. an SFT run before DPO",
        "kind_preset": "preset", "kind_file": "file", "kind_folder": "folder",
        "kind_hub": "Hugging Face id, downloaded when online", "kind_missing": "not found",
        "pretrain_blocks": "continued pre-training, every token trained", "pairs": "pairs",
        "unpaired": "unpaired KTO examples", "chosen": "chosen", "rejected": "rejected",
        "scored_tokens": "the prompt is context; the marked answer tokens are scored",
        "compare_hint": "Tick two runs to compare.",
        "final_train_loss": "final train loss", "eval_loss_before": "held-out loss, before",
        "eval_loss_after": "held-out loss, after", "tokens_per_s": "tokens/s", "train_time_s": "training s",
        "preference_accuracy_before": "preference accuracy, start",
        "preference_accuracy_after": "preference accuracy, tuned",
        "preference_margin_before": "margin, start (nats)", "preference_margin_after": "margin, tuned (nats)",
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
        "method_auto": "자동: SFT, 데이터가 일반 텍스트면 추가 사전학습",
        "method_sft": "SFT: 질문과 답변", "method_pretrain": "추가 사전학습: 일반 텍스트",
        "method_dpo": "DPO: 선호 쌍", "method_orpo": "ORPO: 선호 쌍, 참조 모델 없음",
        "method_kto": "KTO: 좋음/나쁨으로 표시된 답변",
        "method_hint": "DPO, ORPO, KTO는 데이터를 지정하지 않으면 medical-preferences를 읽습니다",
        "adapter": "시작 지점", "adapter_none": "기본 모델",
        "adapter_hint": "완료된 학습의 어댑터, 예: DPO 전에 학습한 SFT",
        "kind_preset": "프리셋", "kind_file": "파일", "kind_folder": "폴더",
        "kind_hub": "Hugging Face id, 온라인일 때 내려받음", "kind_missing": "찾을 수 없음",
        "pretrain_blocks": "추가 사전학습, 모든 토큰 학습", "pairs": "쌍",
        "unpaired": "짝 없는 KTO 예제", "chosen": "선택", "rejected": "거부",
        "scored_tokens": "프롬프트는 문맥이고, 표시된 답변 토큰이 점수화됩니다",
        "compare_hint": "비교할 학습 두 개를 선택하세요.",
        "final_train_loss": "최종 학습 손실", "eval_loss_before": "검증 손실 (학습 전)",
        "eval_loss_after": "검증 손실 (학습 후)", "tokens_per_s": "토큰/초", "train_time_s": "학습 시간(초)",
        "preference_accuracy_before": "선호 정확도 (시작)",
        "preference_accuracy_after": "선호 정확도 (튜닝 후)",
        "preference_margin_before": "마진 (시작, nats)", "preference_margin_after": "마진 (튜닝 후, nats)",
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
