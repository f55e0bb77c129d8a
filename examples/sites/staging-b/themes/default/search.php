<?php if (!$results): ?>
<p class="no-results">Nothing found for <?php echo acme_e($q); ?>.</p>
<?php else: ?>
<ol class="results">
<?php foreach ($results as $r): ?>
  <li><?php echo acme_e($r['title']); ?>
    <p><?php echo acme_e($r['excerpt']); ?></p></li>
<?php endforeach; ?>
</ol>
<?php endif; ?>
