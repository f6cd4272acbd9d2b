"""The command line: captcha-ocr (or python -m captcha_api)
{generate,train,evaluate,audit,kfold,export,pseudolabel,publish,predict,serve} ...; each command's --help gives its
options. The benchmark and soak tools are scripts/bench.py and scripts/soak.py."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from werkzeug.serving import WSGIRequestHandler

from .core.artifact import DEFAULT_MODEL, ModelArtifact
from .core.runtime import RUNTIMES
from .training.data import GRABBED_SHARE
from .training.quiet import quiet_frameworks

# The commands that may load TensorFlow (a Keras model, an export): its chatter is muted before it is first imported.
TENSORFLOW_COMMANDS = {"train", "kfold", "evaluate", "export", "pseudolabel"}
ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def _generate(args) -> int:
    from .training.generator import GeneratorConfig, generate

    config = GeneratorConfig(lengths=((args.length, 1.0),)) if args.length else GeneratorConfig()
    generate(Path(args.out), args.count, seed=args.seed, config=config, workers=args.workers)
    return 0


def _train(args) -> int:
    from .training.train import TrainConfig, train

    own_style = bool(args.data) and not args.synthetic
    if own_style and args.name == "fssp":
        raise SystemExit("name the model of your captcha style: --name NAME (its run goes to runs/NAME)")
    if args.holdout and (args.val_real is not None or args.val_fraction is not None):
        raise SystemExit("give --holdout, or --val-real / --val-fraction, not both")
    if args.val_real is not None and args.val_fraction is not None:
        raise SystemExit("give --val-real or --val-fraction, not both")
    val_fraction = (
        args.val_fraction
        if args.val_fraction is not None
        else (0.15 if own_style and args.val_real is None and not args.holdout else None)
    )
    config = TrainConfig(
        name=args.name,
        synthetic=[Path(p) for p in args.synthetic],
        real=[Path(p) for p in args.real + args.data],
        holdout=[Path(p) for p in args.holdout],
        val_real=args.val_real if args.val_real is not None else 80,
        val_fraction=val_fraction,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        real_repeat=args.real_repeat if args.real_repeat is not None else (None if own_style else 20),
        synthetic_per_epoch=args.synthetic_per_epoch,
        grabbed=args.grabbed,
        patience=args.patience,
        work_dir=Path(args.work_dir or f"runs/{args.name}"),
        seed=args.seed,
        resume=not args.no_resume,
        init_from=Path(args.init_from) if args.init_from else None,
    )
    config.keep_starting_point()
    train(config)
    return 0


def _evaluate(args) -> int:
    from .training.evaluate import main as evaluate_main

    return evaluate_main(args)


def _kfold(args) -> int:
    from .training.kfold import main as kfold_main

    return kfold_main(args)


def _export(args) -> int:
    from .training.export import export_onnx

    export_onnx(Path(args.model), Path(args.out) if args.out else None)
    return 0


def _audit(args) -> int:
    from .training.audit import main as audit_main

    return audit_main(args)


def _pseudolabel(args) -> int:
    from .training.pseudolabel import pseudolabel

    kept, seen = pseudolabel(
        args.model, Path(args.data), Path(args.out), args.min_confidence, range(args.min_length, args.max_length + 1)
    )
    print(f"{kept} of {seen} images labelled into {Path(args.out) / 'labels.csv'}")
    return 0


def _publish(args) -> int:
    from .training.publish import PublishRefused, publish

    try:
        published = publish(Path(args.run), Path(args.to) if args.to else None, force=args.force)
    except PublishRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    print(published.summary())
    return 0


def _predict(args) -> int:
    from .predict import predict

    return predict(args.inputs, args.output, args.model, args.runtime)


class _RequestHandler(WSGIRequestHandler):
    """The app writes one access line per request itself (service/observability/logs.py: latency, request id), as
    it does under gunicorn (accesslog = None); the development server's own line would be a second one for each
    request."""

    def log_request(self, code="-", size="-") -> None:
        pass


class _PlainText(logging.Filter):
    """The development server colours its start-up lines; the app's formatters would write the ANSI codes out as
    text (escaped in the text format, inside the message in JSON)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = ANSI_STYLE.sub("", record.msg)
        return True


def _serve(args) -> int:
    from .service.app import create_app

    app = create_app()
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)  # over CAPTCHA_LOG_LEVEL, which the app has just set
    settings = app.config["SETTINGS"]
    if settings.open_access:
        logging.getLogger("captcha_api.service.security").warning(
            "no API key configured: the service is open to anyone who can reach %s:%d", settings.host, settings.port
        )
    logging.getLogger("werkzeug").addFilter(_PlainText())
    app.run(host=settings.host, port=settings.port, threaded=True, request_handler=_RequestHandler)
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless there is none to show (None, False, an empty list) or the
    help already says it (a default that depends on other options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default == [] or "default" in help_text:
            return action.help
        return super()._get_help_string(action)


def _command(sub, name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description or summary, formatter_class=HelpFormatter)


GRABBED_HELP = (
    f"share of training images made worse as a scraper may grab them: thumbnail, blur, heavy JPEG or noise "
    f"(default {GRABBED_SHARE}; 0 for none)"
)
MODEL_HELP = "model path, with or without suffix: its .keras, .onnx and .json lie side by side"


def _program() -> str:
    """How the user called us: the installed `captcha-ocr` command, or `python -m captcha_api`."""
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return called if called and called != "__main__.py" else "python -m captcha_api"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_program(), description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at DEBUG level (serve: over CAPTCHA_LOG_LEVEL), TensorFlow's and tf2onnx's lines included",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = _command(sub, "generate", "write synthetic FSSP-style captchas and labels.csv")
    gen.add_argument("--count", type=int, required=True, help="how many captchas to write")
    gen.add_argument("--out", required=True, help="folder for the images and labels.csv")
    gen.add_argument("--seed", type=int, default=0, help="the same seed draws the same captchas")
    gen.add_argument("--workers", type=int, default=2, help="processes drawing the captchas")
    gen.add_argument("--length", type=int, help="every text this long (default: 4-7 in the site's proportions)")
    gen.set_defaults(func=_generate)

    tr = _command(
        sub,
        "train",
        "train a CTC-BiLSTM model on a labelled folder of your captchas (--data), or on generated and real ones",
        "Own captcha style: captcha-ocr train --data DIR --name NAME writes runs/NAME/NAME.keras, .onnx and .json "
        "(then captcha-ocr publish runs/NAME serves it). The alphabet and maximum length come from the labels "
        "(labels.csv with filename,text, or images named by their text); 15% of the images are held out to choose "
        "the epoch and measure the model.",
    )
    tr.add_argument("--data", action="append", default=[], help="labelled folder of your captchas (repeatable)")
    tr.add_argument("--name", default="fssp", help="model name: the files are OUT_DIR/NAME.{keras,onnx,json}")
    tr.add_argument("--synthetic", action="append", default=[], help="generated folder with labels.csv (repeatable)")
    tr.add_argument("--real", action="append", default=[], help="real labelled folder (repeatable)")
    tr.add_argument(
        "--holdout",
        action="append",
        default=[],
        help="labelled folder held out whole to choose the epoch and measure the model, none of it trained on "
        "(repeatable; instead of a share of --data/--real)",
    )
    tr.add_argument("--val-real", type=int, help="real images held out for validation (default 80 with --real)")
    tr.add_argument("--val-fraction", type=float, help="share held out for validation (default 0.15 with --data)")
    tr.add_argument(
        "--epochs",
        type=int,
        help="epochs in all, a resumed run's counted, on a cosine schedule (default: until the held-out figure stops "
        "improving for --patience epochs, halving the learning rate on each plateau)",
    )
    tr.add_argument(
        "--max-minutes", type=float, help="time budget: stop after the first epoch that ends past this much training"
    )
    tr.add_argument("--batch-size", type=int, default=64, help="images per training step")
    tr.add_argument(
        "--learning-rate", type=float, default=1e-3, help="peak learning rate: 0.3x for the first epoch, then cosine"
    )
    tr.add_argument(
        "--real-repeat",
        type=int,
        help="times each real training image is seen per epoch (default 20 with generated data; with --data alone, "
        "enough for about 16,000 images an epoch)",
    )
    tr.add_argument("--synthetic-per-epoch", type=int, default=20000, help="generated images drawn per epoch")
    tr.add_argument("--grabbed", type=float, default=GRABBED_SHARE, help=GRABBED_HELP)
    tr.add_argument("--patience", type=int, default=8, help="stop after this many epochs without improvement")
    tr.add_argument(
        "--work-dir",
        help="where the run writes everything: checkpoints (to resume), NAME.keras, NAME.onnx, NAME.json, curve.png, "
        "report.json (default runs/NAME); never a served folder: `publish` puts a finished model there",
    )
    tr.add_argument("--seed", type=int, default=0, help="seed of the hold-out split, the sampling and augmentation")
    tr.add_argument("--no-resume", action="store_true", help="start afresh, whatever checkpoint WORK_DIR holds")
    tr.add_argument(
        "--init-from",
        help="fine-tune: start from this model's weights and keep its alphabet and lengths: a .keras file, a run "
        "(runs/NAME), or a published model (model/NAME, whose weights stay in the run it was published from)",
    )
    tr.set_defaults(func=_train)

    ev = _command(sub, "evaluate", "measure a model on a labelled folder")
    ev.add_argument("--data", required=True, action="append", help="labelled folder (repeatable)")
    ev.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    ev.add_argument(
        "--runtime", default="auto", choices=["auto", "keras", "onnx"], help="auto: ONNX when the .onnx is there"
    )
    ev.add_argument("--json", action="store_true", help="end stdout with one JSON line of the figures")
    ev.add_argument("--record", metavar="KEY", help="store the figures in the model's metadata under KEY")
    ev.add_argument("--files", help="only the file names listed in this text file")
    ev.add_argument("--holdout", action="store_true", help="only the real images the model held out from training")
    ev.add_argument("--batch-size", type=int, default=64, help="images per model call")
    ev.add_argument("--ddddocr", action="store_true", help="read the same images with ddddocr too, in the same run")
    ev.add_argument("--errors-sheet", metavar="FILE.png", help="draw the misread images, label and reading, in a PNG")
    ev.add_argument(
        "--degrade",
        action="store_true",
        help="also read each image degraded (thumbnails, blur, heavy JPEG, noise) for the confidence figures",
    )
    ev.add_argument(
        "--kfold",
        metavar="WORK_DIR",
        help="read each image with the fold model that did not train on it (made by `captcha-ocr kfold`), not --model",
    )
    ev.add_argument(
        "--relabel",
        metavar="FILE.csv",
        help="labels checked by eye over the folder's (filename,text; e.g. the rows of an audit's labels.fixed.csv "
        "you confirmed): the figures count the image's true text",
    )
    ev.add_argument("--risk-coverage", metavar="FILE.png", help="draw the confidence's risk-coverage curve in a PNG")
    ev.add_argument("--readings", metavar="FILE.jsonl", help="write every reading (label, reading, confidence, kind)")
    ev.set_defaults(func=_evaluate)

    au = _command(
        sub,
        "audit",
        "find label slips: the images whose confident reading disagrees with their label",
        "Reads every labelled image with a model that did not train on them, lists the readings that disagree with "
        "their labels (the most confident first: likelier a slip of the label than a misreading), and writes them "
        "to OUT: audit.json, sheet.png (each image with its label and reading, to check by eye) and "
        "labels.fixed.csv (every label, the confident disagreements replaced by the reading). DATA is never "
        "rewritten.",
    )
    au.add_argument("--data", required=True, help="labelled folder (labels.csv, or images named by their text)")
    which = au.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a model that did not train on these images: " + MODEL_HELP)
    which.add_argument(
        "--kfold", metavar="WORK_DIR", help="the fold models of `captcha-ocr kfold` on DATA: each image read by its own"
    )
    au.add_argument("--runtime", default="onnx", choices=["keras", "onnx"], help="which of the model's files reads")
    au.add_argument("--out", default="runs/audit", help="where the audit is written (default: runs/audit)")
    au.add_argument(
        "--min-confidence", type=float, default=0.9, help="least confidence of a reading proposed as the label"
    )
    au.add_argument("--top", type=int, default=40, help="disagreements listed and drawn on the sheet")
    au.set_defaults(func=_audit)

    kf = _command(
        sub,
        "kfold",
        "train K models on a labelled folder, each without one fold: every image read by a model that never saw it",
        "Deals DATA's images into K folds and trains a model on all but each fold (with any generated data), the fold "
        "left out altogether: the epoch is chosen on generated validation images, or the last is kept. Then "
        "`evaluate --kfold WORK_DIR` measures on every image, and `audit --kfold WORK_DIR` finds label slips. "
        "A finished fold is kept and an unfinished one resumed when the command is run again.",
    )
    kf.add_argument("--data", required=True, help="labelled folder (labels.csv, or images named by their text)")
    kf.add_argument("--folds", type=int, default=5, help="K: models trained, images held out by each (default 5)")
    kf.add_argument("--work-dir", required=True, help="where the fold runs go, e.g. runs/kfold-NAME")
    kf.add_argument("--synthetic", action="append", default=[], help="generated folder trained on too (repeatable)")
    kf.add_argument("--init-from", help="start each fold from this model (one that did not train on DATA)")
    kf.add_argument("--epochs", type=int, default=6, help="epochs per fold")
    kf.add_argument("--real-repeat", type=int, default=20, help="times each image is seen per epoch")
    kf.add_argument("--synthetic-per-epoch", type=int, default=4000, help="generated images drawn per epoch")
    kf.add_argument("--grabbed", type=float, default=GRABBED_SHARE, help=GRABBED_HELP)
    kf.add_argument("--learning-rate", type=float, default=5e-4, help="peak learning rate")
    kf.add_argument("--seed", type=int, default=0, help="seed of the folds, sampling and augmentation")
    kf.set_defaults(func=_kfold)

    ex = _command(sub, "export", "write the ONNX artifact beside a Keras model")
    ex.add_argument("--model", default=str(ModelArtifact(DEFAULT_MODEL).keras), help="Keras model to convert")
    ex.add_argument("--out", help="ONNX file to write (default: beside the model, with its name)")
    ex.set_defaults(func=_export)

    pl = _command(sub, "pseudolabel", "label unlabelled real captchas with a model, keeping confident ones")
    pl.add_argument("--data", required=True, help="folder of unlabelled images")
    pl.add_argument("--out", required=True, help="folder for labels.csv and a copy of the images kept, in images/")
    pl.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    pl.add_argument("--min-confidence", type=float, default=0.95, help="keep readings at least this sure, 0 to 1")
    pl.add_argument("--min-length", type=int, default=4, help="keep readings at least this long")
    pl.add_argument("--max-length", type=int, default=7, help="keep readings at most this long")
    pl.set_defaults(func=_pseudolabel)

    pb = _command(
        sub,
        "publish",
        "put a trained model into the served folder, if it reads at least as well as the one it replaces",
        "Copy RUN's NAME.onnx and NAME.json into the served folder, each written aside and renamed, so a service never "
        "sees half a model; a running service takes it on its next reload (kill -HUP <gunicorn master>). When a "
        "model of that name is served already, both are measured on the held-out images recorded for the new one, "
        "and the new one must score at least as well (exact match), else nothing is copied.",
    )
    pb.add_argument("run", help="the training run: runs/NAME (or a path to its NAME.onnx)")
    pb.add_argument(
        "--to", help="the served folder (default: CAPTCHA_MODEL_DIR, else the folder of CAPTCHA_MODEL, else model/)"
    )
    pb.add_argument("--force", action="store_true", help="publish even when it reads worse, or cannot be measured")
    pb.set_defaults(func=_publish)

    pr = _command(
        sub, "predict", "read captchas on this machine, no server: one line per image, name, reading, confidence"
    )
    pr.add_argument("inputs", nargs="+", help="image files or folders of images")
    pr.add_argument("-o", "--output", default="predictions.txt", help="where to write the lines ('-': stdout)")
    pr.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    pr.add_argument("--runtime", default="auto", choices=RUNTIMES, help="auto: ONNX when its file is there, else Keras")
    pr.set_defaults(func=_predict)

    sv = _command(
        sub,
        "serve",
        "run the development server (production: gunicorn -c gunicorn.conf.py)",
        "Run the Flask development server, set up like the production one by the CAPTCHA_* variables (CAPTCHA_HOST, "
        "CAPTCHA_PORT, CAPTCHA_API_KEYS...); it logs to stdout in CAPTCHA_LOG_FORMAT. Production: gunicorn -c "
        "gunicorn.conf.py.",
    )
    sv.set_defaults(func=_serve)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        # serve logs through the app's own handler, in CAPTCHA_LOG_FORMAT (service/observability/logs.py): a text
        # handler here as well wrote every line twice.
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    if args.command in TENSORFLOW_COMMANDS and not args.verbose:
        quiet_frameworks()
    from .service.config import ConfigError
    from .training.data import LabelsError

    try:
        return args.func(args)
    except (ConfigError, LabelsError) as exc:  # the user's to fix: one line that says what, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
