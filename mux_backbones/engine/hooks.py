"""Training hooks of the suite (registered in mmengine's HOOKS, so every scope finds them)."""
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class EvaluateBeforeTrainHook(Hook):
    """Run the validation loop once before the first training iteration.

    Gives the "before" metric of a run (e.g. the mAP/mIoU of the untrained model) in the same log
    and with the same evaluator as the "after" one. Skipped when resuming mid-run.
    """

    priority = 'LOW'

    def before_train(self, runner) -> None:
        if runner.iter > 0 or runner.val_loop is None:
            return
        runner.logger.info('Evaluating the model before training')
        runner.val_loop.run()
