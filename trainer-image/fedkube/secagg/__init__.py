"""Secure aggregation (Bonawitz et al. 2017): the aggregator learns the sum of the sites'
updates and nothing else about any one of them.

One round, on top of the usual TRAIN task:

1. Each site trains, then advertises two X25519 public keys (``site.SiteSession``).
2. The aggregator closes the roster and relays it; each site Shamir-shares its mask private
   key and a fresh self-mask seed (threshold t), seals each share for its recipient with a
   key agreed by X25519 + HKDF (AES-GCM), and sends them for the aggregator to route blind.
3. Each site encodes its weighted update in fixed point mod 2^32 (``encoding``) and adds its
   self mask and one pairwise mask per other participant (AES-CTR streams from HKDF seeds;
   the two sites of a pair add and subtract the same stream, so pairs cancel in the sum).
4. The aggregator tells the survivors who sent a masked update and who dropped. Each reveals
   shares of the survivors' self seeds and of the dropped sites' mask keys, never both for
   one site. With t of them, the aggregator removes the masks from the sum (``server``).

The threat model is an honest-but-curious aggregator and sites that may drop at any step.
Sample counts are visible to the aggregator (they fix the weights); updates are not.
"""
