"""Float64 NumPy forward pass of our ViT parameter tree (grid front-end, learned posemb, cls token)."""
import numpy as np


def layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def attention(x, p):
  q = np.einsum("btd,dhk->bthk", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("btd,dhk->bthk", x, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("btd,dhk->bthk", x, p["value"]["kernel"]) + p["value"]["bias"]
  logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  y = np.einsum("bhqs,bshk->bqhk", w, v)
  return np.einsum("bqhk,hkd->bqd", y, p["out"]["kernel"]) + p["out"]["bias"]


def vit_forward(params, images, patch_size, depth, pool="token"):
  params = {k: v for k, v in params.items()}
  to64 = lambda t: {k: to64(v) for k, v in t.items()} if isinstance(t, dict) else np.asarray(t, np.float64)
  params = to64(params)
  b, h, w, c = images.shape
  p = patch_size
  x = np.asarray(images, np.float64).reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(b, -1, p * p * c)
  emb = params["patch_embed"]["embedding"]
  x = x @ emb["kernel"].reshape(p * p * c, -1) + emb["bias"]
  x = x + params["patch_embed"]["posemb"]["pos_embedding"]
  if pool == "token":
    cls = params["cls"] + params["cls_pos_embedding"]
    x = np.concatenate([np.broadcast_to(cls, (b, 1, x.shape[-1])), x], 1)
  enc = params["encoder"]
  for i in range(depth):
    blk = enc[f"block{i}"]
    x = x + attention(layer_norm(x, blk["norm1"]), blk["attn"])
    y = layer_norm(x, blk["norm2"])
    y = gelu_tanh(y @ blk["mlp"]["Dense_0"]["kernel"] + blk["mlp"]["Dense_0"]["bias"])
    x = x + y @ blk["mlp"]["Dense_1"]["kernel"] + blk["mlp"]["Dense_1"]["bias"]
  x = layer_norm(x, enc["encoder_norm"])
  pre = x[:, 0] if pool == "token" else x.mean(1)
  return pre @ params["head"]["kernel"] + params["head"]["bias"]
