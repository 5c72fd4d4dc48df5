//! The fused ops on `Autodiff<B>`: one graph node per op whose backward calls `B`'s kernel when
//! `B::FUSED`, else the reference composition recorded op by op (exactly the model's former
//! graph); the loss and attention are one node on every backend. The nodes are compute-bound:
//! what the backward needs is kept, never recomputed.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::ops::{FloatTensor, IntTensor, ModuleOps};
use burn::tensor::{FloatDType, Int, Tensor, TensorPrimitive};

use super::{FusedOps, LossHead, reference};

type Ad<B, C> = Autodiff<B, C>;

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn prim<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

pub(super) fn linear<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Ad<B, C>>,
    w: FloatTensor<Ad<B, C>>,
) -> FloatTensor<Ad<B, C>> {
    if !B::linear_node() {
        return <Ad<B, C> as ModuleOps<Ad<B, C>>>::linear(x, w, None);
    }

    #[derive(Debug)]
    struct Linear;

    impl<B: FusedOps> Backward<B, 2> for Linear {
        type State = (FloatTensor<B>, FloatTensor<B>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, w) = ops.state;
            let dy = grads.consume::<B>(&ops.node);
            let need = [ops.parents[0].is_some(), ops.parents[1].is_some()];
            let dxw = B::linear_backward(x, w, dy, need);
            for (parent, grad) in ops.parents.into_iter().zip(dxw) {
                if let (Some(node), Some(grad)) = (parent, grad) {
                    grads.register::<B>(node.id, grad);
                }
            }
        }
    }

    match Linear
        .prepare::<C>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = B::linear_forward(x.primitive.clone(), w.primitive.clone());
            prep.finish((x.primitive, w.primitive), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::linear_forward(x.primitive, w.primitive)),
    }
}

pub(super) fn cross_entropy<B: FusedOps, C: CheckpointStrategy>(
    logits: FloatTensor<Ad<B, C>>,
    targets: IntTensor<Ad<B, C>>,
    vocab: usize,
    softcap: f64,
) -> FloatTensor<Ad<B, C>> {
    if !B::FUSED {
        return prim(reference::cross_entropy_losses::<Ad<B, C>>(
            tensor(logits),
            Tensor::<Ad<B, C>, 1, Int>::from_primitive(targets),
            vocab,
            softcap,
        ));
    }

    #[derive(Debug)]
    struct CrossEntropy;

    impl<B: FusedOps> Backward<B, 1> for CrossEntropy {
        type State = FloatTensor<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let unit = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                B::cross_entropy_backward(unit, grad)
            });
        }
    }

    match CrossEntropy
        .prepare::<C>([logits.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (losses, unit) =
                B::cross_entropy_forward(logits.primitive, targets, vocab, softcap, true);
            prep.finish(unit.expect("asked for the gradient"), losses)
        }
        OpsKind::UnTracked(prep) => prep
            .finish(B::cross_entropy_forward(logits.primitive, targets, vocab, softcap, false).0),
    }
}

/// One node for `lm_head` and the loss, on every backend (the blocked composition has no
/// graph to fall back to): the forward computes the gradients of the sum, the backward scales
/// them by the incoming scalar.
pub(super) fn linear_cross_entropy<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Ad<B, C>>,
    w: FloatTensor<Ad<B, C>>,
    targets: IntTensor<Ad<B, C>>,
    weights: Option<FloatTensor<Ad<B, C>>>,
    head: LossHead,
) -> FloatTensor<Ad<B, C>> {
    #[derive(Debug)]
    struct LinearCrossEntropy;

    impl<B: FusedOps> Backward<B, 2> for LinearCrossEntropy {
        type State = [Option<FloatTensor<B>>; 2];

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let g = tensor::<B, 1>(grads.consume::<B>(&ops.node)).reshape([1, 1]);
            for (parent, unit) in ops.parents.into_iter().zip(ops.state) {
                if let (Some(node), Some(unit)) = (parent, unit) {
                    let unit = tensor::<B, 2>(unit);
                    let g = g.clone().cast(FloatDType::from(unit.dtype()));
                    grads.register::<B>(node.id, prim(unit * g));
                }
            }
        }
    }

    let need = [!x.node.requirement.is_none(), !w.node.requirement.is_none()];
    let weights = weights.map(|w| w.primitive);
    match LinearCrossEntropy
        .prepare::<C>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (sum, grads) = B::linear_cross_entropy_forward(
                (x.primitive, w.primitive),
                targets,
                weights,
                head,
                need,
            );
            prep.finish(grads, sum)
        }
        OpsKind::UnTracked(prep) => prep.finish(
            B::linear_cross_entropy_forward(
                (x.primitive, w.primitive),
                targets,
                weights,
                head,
                [false; 2],
            )
            .0,
        ),
    }
}

pub(super) fn rms_norm<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Ad<B, C>>,
    eps: f64,
) -> FloatTensor<Ad<B, C>> {
    if !B::FUSED {
        return prim(reference::rms_norm::<Ad<B, C>, 2>(tensor(x), eps));
    }

    #[derive(Debug)]
    struct RmsNorm;

    impl<B: FusedOps> Backward<B, 1> for RmsNorm {
        type State = (FloatTensor<B>, Option<FloatTensor<B>>, f64);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, saved, eps) = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                B::rms_norm_backward(x, saved, dy, eps)
            });
        }
    }

    match RmsNorm
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, saved) = B::rms_norm_forward(x.primitive.clone(), eps);
            prep.finish((x.primitive, saved, eps), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x.primitive, eps)),
    }
}

pub(super) fn rotary_norm<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Ad<B, C>>,
    cos: FloatTensor<Ad<B, C>>,
    sin: FloatTensor<Ad<B, C>>,
    eps: f64,
    scale: f64,
) -> FloatTensor<Ad<B, C>> {
    if !B::FUSED {
        let (cos, sin) = (tensor::<Ad<B, C>, 2>(cos), tensor::<Ad<B, C>, 2>(sin));
        return prim(reference::rotary_norm(tensor(x), &cos, &sin, eps, scale));
    }

    #[derive(Debug)]
    struct RotaryNorm;

    /// Input, saved, cos, sin, eps, scale.
    type State<B> = (
        FloatTensor<B>,
        Option<FloatTensor<B>>,
        FloatTensor<B>,
        FloatTensor<B>,
        f64,
        f64,
    );

    impl<B: FusedOps> Backward<B, 1> for RotaryNorm {
        type State = State<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, saved, cos, sin, eps, scale) = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                B::rotary_norm_backward(x, saved, dy, cos, sin, eps, scale)
            });
        }
    }

    // The tables are constants: their gradient is not taken.
    let (cos, sin) = (cos.primitive, sin.primitive);
    match RotaryNorm
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, saved) =
                B::rotary_norm_forward(x.primitive.clone(), cos.clone(), sin.clone(), eps, scale);
            prep.finish((x.primitive, saved, cos, sin, eps, scale), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::rotary_norm(x.primitive, cos, sin, eps, scale)),
    }
}

pub(super) fn attention<B: FusedOps, C: CheckpointStrategy>(
    q: FloatTensor<Ad<B, C>>,
    k: FloatTensor<Ad<B, C>>,
    v: FloatTensor<Ad<B, C>>,
    window: usize,
) -> FloatTensor<Ad<B, C>> {
    // One node on every backend: the reference composition would keep the `B·H·T·T` scores
    // and probabilities; the default kernels are the blocked composition.
    #[derive(Debug)]
    struct Attention;

    /// q, k, v, out, saved, window.
    type State<B> = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        Option<FloatTensor<B>>,
        usize,
    );

    impl<B: FusedOps> Backward<B, 3> for Attention {
        type State = State<B>;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (q, k, v, out, saved, window) = ops.state;
            let dout = grads.consume::<B>(&ops.node);
            let [dq, dk, dv] = B::attention_backward(q, k, v, out, saved, dout, window);
            for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                if let Some(node) = parent {
                    grads.register::<B>(node.id, grad);
                }
            }
        }
    }

    match Attention
        .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, saved) = B::attention_forward(
                q.primitive.clone(),
                k.primitive.clone(),
                v.primitive.clone(),
                window,
            );
            prep.finish(
                (
                    q.primitive,
                    k.primitive,
                    v.primitive,
                    out.clone(),
                    saved,
                    window,
                ),
                out,
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(B::causal_attention(
            q.primitive,
            k.primitive,
            v.primitive,
            window,
        )),
    }
}

pub(super) fn relu_squared<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Ad<B, C>>,
) -> FloatTensor<Ad<B, C>> {
    if !B::FUSED {
        return reference::relu_squared_prim::<Ad<B, C>>(x);
    }

    #[derive(Debug)]
    struct ReluSquared;

    impl<B: FusedOps> Backward<B, 1> for ReluSquared {
        type State = FloatTensor<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let x = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                B::relu_squared_backward(x, dy)
            });
        }
    }

    match ReluSquared
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = B::relu_squared(x.primitive.clone());
            prep.finish(x.primitive, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::relu_squared(x.primitive)),
    }
}

pub(super) fn softcap<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Ad<B, C>>,
    cap: f64,
) -> FloatTensor<Ad<B, C>> {
    if !B::FUSED {
        return reference::softcap_prim::<Ad<B, C>>(x, cap);
    }

    #[derive(Debug)]
    struct Softcap;

    impl<B: FusedOps> Backward<B, 1> for Softcap {
        type State = (FloatTensor<B>, f64);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (y, cap) = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                B::softcap_backward(y, dy, cap)
            });
        }
    }

    match Softcap
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = B::softcap(x.primitive, cap);
            prep.finish((y.clone(), cap), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::softcap(x.primitive, cap)),
    }
}
