<?php if (!$results): ?>
<p class="no-results">Nothing found for <?php echo $q; ?>.</p>
<?php else: ?>
<ol class="results">
<?php foreach ($results as $r): ?>
  <li><?php echo htmlspecialchars($r['title']); ?>
    <p><?php echo htmlspecialchars($r['excerpt']); ?></p></li>
<?php endforeach; ?>
</ol>
<?php endif; ?>
